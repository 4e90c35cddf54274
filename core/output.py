"""What a run leaves behind: ``model/``, ``report.json`` and ``report.md``, each written atomically.

Everything is written under a temporary name and renamed into place, so an interrupted run never
leaves a half-written model or report that looks complete.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, computed_field

from prunekit.config import RunConfig
from prunekit.errors import UsageError
from prunekit.payloads import Metrics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

REPORTED_PACKAGES = ("torch", "transformers", "lm_eval", "peft", "pluggy")


class Params(BaseModel):
    before: int
    after: int

    @computed_field
    @property
    def reduction(self) -> float:
        """Whole-model parameter reduction, whatever dimension the ratio targeted."""
        return 1 - self.after / self.before if self.before else 0.0


class StageMemory(BaseModel):
    """Resident memory of one stage in MB: at its start (``None`` where unknown) and its peak."""

    start_mb: float | None
    peak_mb: float


class Report(BaseModel):
    """``report.json``: the output contract of design.md."""

    prunekit_version: str
    model: str
    plugins: list[str]
    ratio: float
    params: Params
    metrics: dict[str, Metrics]
    """``before`` (uncompressed) and ``after`` (compressed)."""
    timings: dict[str, float]
    """Seconds per stage."""
    peak_rss_mb: float
    memory: dict[str, StageMemory]
    """Per stage: resident memory at its start and its peak (the slicing stage's peak stays near
    one layer's new weights beyond the model, since layers are sliced one at a time)."""
    stock: bool
    """Whether ``model/`` loads with stock ``AutoModelForCausalLM.from_pretrained``."""
    pruning: dict[str, Any]
    """The pruner's own report per dimension (settings, learning curves)."""
    recovery: dict[str, Any] | None
    versions: dict[str, str]
    config: RunConfig


class Evaluation(BaseModel):
    """What ``core eval`` prints: one model's metrics, measured as a run measures them."""

    prunekit_version: str
    model: str
    params: int
    metrics: Metrics
    versions: dict[str, str]
    config: RunConfig


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_directory(config: RunConfig) -> Path:
    """The run's output directory; refuses one that already holds a run rather than overwrite it."""
    if config.output is not None:
        directory = config.output
    else:
        model = config.model.strip("/").replace("/", "_")
        plugins = "+".join(config.plugins) or "none"
        directory = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{plugins}-r{config.ratio:g}"
    if (directory / "model").exists() or (directory / "report.json").exists():
        raise UsageError(f"output directory already holds a run: {directory} (choose another --output)")
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"output path is not a directory: {directory}")
    return directory


def _temporary_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, target: Path) -> None:
    """``save_pretrained`` (safetensors) with the tokenizer, renamed into ``target`` when complete."""
    staging = _temporary_sibling(target)
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    os.replace(staging, target)


def write_text(target: Path, text: str) -> None:
    staging = _temporary_sibling(target)
    staging.write_text(text)
    os.replace(staging, target)


def write_report(report: Report, directory: Path) -> None:
    write_text(directory / "report.json", report.model_dump_json(indent=2) + "\n")
    write_text(directory / "report.md", render_markdown(report))


def _retention(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return ""
    return f"{after / before:.3f}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def metric_rows(before: Metrics, after: Metrics) -> list[tuple[str, float | None, float | None]]:
    """(name, before, after) for every metric either stage measured, in a stable order."""
    rows: list[tuple[str, float | None, float | None]] = []
    if before.perplexity is not None or after.perplexity is not None:
        rows.append(("perplexity", before.perplexity, after.perplexity))
    for task in sorted(before.tasks.keys() | after.tasks.keys()):
        b, a = before.tasks.get(task, {}), after.tasks.get(task, {})
        rows += [(f"{task} {m}", b.get(m), a.get(m)) for m in sorted(b.keys() | a.keys())]
    for group in ("latency", "extra"):
        b, a = getattr(before, group), getattr(after, group)
        rows += [(name, b.get(name), a.get(name)) for name in sorted(b.keys() | a.keys())]
    return rows


def render_markdown(report: Report) -> str:
    lines = [
        f"# prunekit run: {report.model}",
        "",
        f"- plugins: {', '.join(report.plugins) or 'none'}",
        f"- ratio: {report.ratio:g}",
        f"- parameters: {report.params.before:,} → {report.params.after:,} "
        f"({report.params.reduction:.1%} fewer)",
        f"- stock checkpoint: {'yes' if report.stock else 'no — load with prunekit.load(DIR)'}",
        f"- peak memory (RSS): {report.peak_rss_mb:.0f} MB",
        "",
    ]
    rows = metric_rows(report.metrics["before"], report.metrics["after"])
    if rows:
        lines += ["| metric | before | after | after / before |", "|---|---|---|---|"]
        lines += [f"| {n} | {_fmt(b)} | {_fmt(a)} | {_retention(b, a)} |" for n, b, a in rows]
        lines.append("")
    lines += ["| stage | seconds | memory at start (MB) | peak memory (MB) |", "|---|---|---|---|"]
    for stage, seconds in report.timings.items():
        used = report.memory.get(stage)
        start = "" if used is None or used.start_mb is None else f"{used.start_mb:.0f}"
        peak = "" if used is None else f"{used.peak_mb:.0f}"
        lines.append(f"| {stage} | {seconds:.2f} | {start} | {peak} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()), ""]
    return "\n".join(lines)

