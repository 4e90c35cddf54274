"""Run configuration: one pydantic model, from a YAML or TOML file and CLI flags.

Flags override file values; pydantic validates the merged result, and any invalid value becomes a one-line
:class:`UsageError` that names the field and the reason, before the run starts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prunekit.errors import UsageError
from prunekit.payloads import Dimension


class RunConfig(BaseModel):
    """Everything a ``core run`` or ``core eval`` needs to know, and what the report records."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A built-in name, a local HF directory or a Hub id.")
    plugins: list[str] = Field(default_factory=list, description="Plugins taking part in the run.")
    ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Fraction of each targeted dimension removed.")
    ratios: dict[Dimension, float] = Field(default_factory=dict, description=(
        "Per-dimension ratios (ffn, heads, layers) overriding `ratio` for those dimensions, as a search's chosen "
        "configuration gives them."))
    tasks: list[str] = Field(default_factory=list, description="lm-eval task names, or local:DIR of task configs.")
    limit: int | None = Field(default=None, gt=0, description="Examples per task.")
    output: Path | None = Field(default=None, description="Run directory (default under runs/).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    seed: int = 0
    stream: bool = Field(default=False, description=(
        "Score, slice and write one decoder layer at a time, for a model larger than memory; no evaluation."))
    options: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                               description="Per-plugin settings: {plugin name: {key: value}}.")

    @field_validator("ratios")
    @classmethod
    def _ratios_in_range(cls, value: dict[Dimension, float]) -> dict[Dimension, float]:
        for dimension, ratio in value.items():
            if not 0 <= ratio < 1:
                raise ValueError(f"the {dimension.value} ratio must be in [0, 1), got {ratio:g}")
        return value

    def ratio_for(self, dimension: Dimension) -> float:
        """The fraction of ``dimension`` to remove: its entry in ``ratios``, else ``ratio``."""
        return self.ratios.get(dimension, self.ratio)

    @property
    def compresses(self) -> bool:
        """Whether the run removes anything at all."""
        return self.ratio > 0 or any(ratio > 0 for ratio in self.ratios.values())

    @field_validator("plugins", "tasks", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """``--plugins prunenet,lora`` and ``plugins: [prunenet, lora]`` mean the same."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (.yaml/.yml) or TOML (.toml) file."""
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
        elif suffix == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            raise UsageError(f"config file must be .yaml, .yml or .toml: {path}")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot parse config file {path}: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of fields, not {type(data).__name__}")
    return data


def parse_option(assignment: str) -> tuple[str, str, Any]:
    """``-o prunenet.episodes=5`` → ``("prunenet", "episodes", 5)``; the value is read as YAML, so numbers, booleans
    and ``[a, b]`` lists arrive typed."""
    key, sep, raw = assignment.partition("=")
    plugin, dot, field = key.strip().partition(".")
    if not (sep and dot and plugin and field):
        raise UsageError(f"invalid option {assignment!r}: expected PLUGIN.KEY=VALUE, e.g. lora.steps=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return plugin, field.strip(), value


def build_config(path: Path | None, overrides: dict[str, Any], options: list[str] | None = None) -> RunConfig:
    """The run config from an optional file, with the given (non-None) values and ``-o`` options on top."""
    data = read_config_file(path) if path else {}
    data.update({key: value for key, value in overrides.items() if value is not None})
    if options:
        given = data.get("options")
        merged = {name: dict(values) for name, values in given.items()} if isinstance(given, dict) else {}
        for plugin, field, value in map(parse_option, options):
            merged.setdefault(plugin, {})[field] = value
        data["options"] = merged
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one line: ``invalid config: ratio: Input should be less than 1 (got 1.5)``."""
    parts = []
    for error in exc.errors():
        field = prefix + ".".join(str(loc) for loc in error["loc"]) or "config"
        got = f" (got {error['input']!r})" if error["type"] != "missing" else ""
        parts.append(f"{field}: {error['msg']}{got}")
    return "invalid config: " + "; ".join(parts)
