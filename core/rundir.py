"""The run directory: which one a run may write into, and what it keeps so that a killed run resumes.

A run's expensive work (a trained policy, a calibration, minutes of LoRA training) must survive a kill at any point,
and a directory must never look finished when it is not. In the order a run writes them: ``run.json`` (the command:
a rerun into the directory must be the same one), ``checkpoints/`` (recovery's scratch), ``resume/`` (the compressed
model and ``state.json``, whole or absent), the result, and ``report.json`` last, the mark of a finished run. What a
rerun does with each state: docs/interruptions.md.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from prunekit import files
from prunekit.errors import UsageError
from prunekit.payloads import Metrics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from prunekit.config import RunConfig

COMMAND_FILE = "run.json"
REPORT_FILE = "report.json"
RESULT_FILES = (REPORT_FILE, "report.md", "recovery.png")
SCRATCH = "checkpoints"
RESUME = "resume"
_METRICS = TypeAdapter(Metrics)


def command(config: RunConfig) -> dict[str, Any]:
    """What makes two runs the same command: every resolved setting but the output directory."""
    return config.model_dump(mode="json", exclude={"output"})


def _differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings (``ratio``, ``options.lora.steps``) in which two commands differ."""
    differ = []
    for key in sorted(recorded.keys() | current.keys()):
        old, new = recorded.get(key), current.get(key)
        if key == "options" and isinstance(old, dict) and isinstance(new, dict):
            for plugin in sorted(old.keys() | new.keys()):
                before, after = old.get(plugin) or {}, new.get(plugin) or {}
                differ += [f"options.{plugin}.{name}" for name in sorted(before.keys() | after.keys())
                           if before.get(name) != after.get(name)]
        elif old != new:
            differ.append(key)
    return differ


def choose(config: RunConfig) -> Path:
    """The run's directory: ``--output``, or a new timestamped one under ``runs/``. An existing one must be empty or
    hold a run of the same command (to resume or redo); anything else is refused before the run starts."""
    directory = config.output
    if directory is None:
        model, plugins = config.model.strip("/").replace("/", "_"), "+".join(config.plugins) or "none"
        directory = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{plugins}-r{config.ratio:g}"
    if not directory.exists():
        return directory
    if not directory.is_dir():
        raise UsageError(f"output path is not a directory: {directory}")
    recorded = directory / COMMAND_FILE
    if recorded.is_file():
        try:
            earlier = json.loads(recorded.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {recorded}: {exc} (choose another --output)") from exc
        differ = _differences(earlier, command(config)) if isinstance(earlier, dict) else ["everything"]
        if differ:
            raise UsageError(
                f"output directory holds a run of another command: {directory} (it differs in "
                f"{', '.join(differ)}); rerun that command to finish it, or choose another --output"
            )
        return directory
    if (directory / "model").exists() or (directory / REPORT_FILE).exists():
        raise UsageError(f"output directory already holds a run: {directory} (choose another --output)")
    if any(directory.iterdir()):
        raise UsageError(f"output directory is not empty and holds no run of this command: {directory} "
                         "(choose a new or empty --output)")
    return directory


def claim(directory: Path, config: RunConfig) -> None:
    """Record the command before the run writes anything else, and clear what an earlier run of it left: files a
    kill cut off under temporary names, and a redone run's report (first: no new model beside an old report)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / COMMAND_FILE).is_file():
        files.write_json(directory / COMMAND_FILE, command(config), indent=2, sort_keys=True)
    for name in RESULT_FILES:  # the completeness marker first
        (directory / name).unlink(missing_ok=True)
    for path in directory.iterdir():
        if files.STAGED.match(path.name):
            files.remove(path)


def release(directory: Path, existed: bool) -> None:
    """Undo :func:`claim` for a run that stopped before it wrote anything else (a plugin's late refusal, a failure): a
    directory holding only the command record is no run worth resuming, and one the run created goes with it."""
    if directory.is_dir() and [path.name for path in directory.iterdir()] == [COMMAND_FILE]:
        (directory / COMMAND_FILE).unlink()
        if not existed:
            directory.rmdir()


class Resume:
    """``resume/`` of one run directory: the compressed model and what the report needs of the stages that made it."""

    def __init__(self, directory: Path) -> None:
        self.root = directory / RESUME
        self.state_file = self.root / "state.json"

    def state(self) -> dict[str, Any] | None:
        """What an earlier run of this command kept, or ``None`` if it kept nothing."""
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else None

    def keep(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, state: dict[str, Any]) -> None:
        """Keep the compressed ``model`` and ``state``, whole or not at all."""
        with files.staged(self.root) as staging:
            staging.mkdir(parents=True)
            files.save_model(model, tokenizer, staging / "model")
            files.write_json(staging / self.state_file.name, state, indent=2)

    def model(self, dtype: Any, device: Any) -> PreTrainedModel:
        """The kept model, exactly as it was computed."""
        from prunekit.loading import load

        return load(self.root / "model", dtype=dtype).to(device=device)

    def record_after(self, metrics: Metrics, stages: dict[str, Any]) -> None:
        """Add the after-metrics and their stage's timing, so a kill during the save does not measure them again."""
        state = self.state() or {}
        for key in ("timings", "memory"):
            state[key] = {**state.get(key, {}), **stages[key]}
        state["after"] = _METRICS.dump_python(metrics, mode="json")
        files.write_json(self.state_file, state, indent=2)

    @staticmethod
    def after(state: dict[str, Any]) -> Metrics | None:
        return _METRICS.validate_python(state["after"]) if state.get("after") is not None else None

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
