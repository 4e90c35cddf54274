"""The report's data model: ``report.json``'s schema (:class:`Report`) and the figures it derives (retention,
speedup); ``render_report`` plugins write it out for people from :mod:`prunekit.rendering`.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field

from prunekit.config import RunConfig
from prunekit.payloads import Metrics

REPORTED_PACKAGES = ("torch", "transformers", "lm_eval", "peft", "pluggy")


class Count(BaseModel):
    """Parameters of one part of the model before and after compression."""

    before: int
    after: int


class Params(BaseModel):
    before: int
    after: int
    decoder_layers: Count | None = None
    """Parameters inside the decoder layers. The rest (embeddings, LM head, final norm: ``outside_layers``) is out of
    reach of every per-layer dimension."""
    units: dict[str, Count] = {}
    """Per dimension within the layers (``ffn``, ``heads``), the parameters its units hold: what removing every unit
    would remove, so more than any ratio of that dimension can."""

    @computed_field
    @property
    def reduction(self) -> float:
        """Whole-model parameter reduction, whatever dimension the ratio targeted."""
        return 1 - self.after / self.before if self.before else 0.0

    @computed_field
    @property
    def outside_layers(self) -> Count | None:
        """Parameters outside the decoder layers: embeddings, LM head (once where tied), final norm."""
        inside = self.decoder_layers
        return None if inside is None else Count(before=self.before - inside.before, after=self.after - inside.after)

    @computed_field
    @property
    def share(self) -> dict[str, float]:
        """Each part's share of the uncompressed model's parameters: ``decoder_layers``, ``outside_layers`` and every
        dimension of ``units``. A dimension's share is the most slicing it can remove from the model."""
        if not self.before:
            return {}
        parts = {"decoder_layers": self.decoder_layers, "outside_layers": self.outside_layers, **self.units}
        return {name: part.before / self.before for name, part in parts.items() if part is not None}


class DiskBytes(BaseModel):
    """Bytes of the weight files (safetensors or bin) of the source checkpoint and of ``model/``."""

    before: int | None
    """``None`` where the source is not a local folder (a built-in tiny model, a Hub id)."""
    after: int


class Baseline(BaseModel):
    """Where the report's "before" metrics came from (see :mod:`prunekit.baselines`)."""

    fingerprint: str | None
    """The uncompressed model's fingerprint; ``None`` when nothing could be cached."""
    cached: list[str]
    """Evaluators whose "before" metrics were read from the cache."""
    measured: list[str]
    """Evaluators that measured the uncompressed model in this run."""


class TaskRetention(BaseModel):
    metric: str
    """The task's primary metric, the one averages and retention use."""
    before: float
    after: float
    retention: float | None
    """``after / before``."""


class Retention(BaseModel):
    """How much of the uncompressed model's zero-shot accuracy the compressed one keeps."""

    tasks: dict[str, TaskRetention]
    average_before: float | None
    """Mean of the tasks' primary metrics: the pruning papers' zero-shot average."""
    average_after: float | None
    average_retention: float | None
    """``average_after / average_before`` (the papers' "% retained")."""
    mean_task_retention: float | None
    """Mean over tasks of each task's ``after / before``."""


def _ratio(after: float | None, before: float | None) -> float | None:
    return after / before if after is not None and before else None


def retention(before: Metrics, after: Metrics) -> Retention:
    """Per-task and averaged retention over the tasks both stages scored."""
    tasks = {}
    for task, metric in after.primary_metric.items():
        if task in before.tasks and metric in before.tasks[task]:
            b, a = before.tasks[task][metric], after.tasks[task][metric]
            tasks[task] = TaskRetention(metric=metric, before=b, after=a, retention=_ratio(a, b))
    average_before = statistics.fmean(t.before for t in tasks.values()) if tasks else None
    average_after = statistics.fmean(t.after for t in tasks.values()) if tasks else None
    ratios = [t.retention for t in tasks.values() if t.retention is not None]
    return Retention(tasks=tasks, average_before=average_before, average_after=average_after,
                     average_retention=_ratio(average_after, average_before),
                     mean_task_retention=statistics.fmean(ratios) if ratios else None)


def speedup(before: Metrics, after: Metrics) -> dict[str, float]:
    """``after / before`` of every throughput (latency keys ending in ``_tokens_per_s``) both measured."""
    rates = sorted(name for name in before.latency.keys() & after.latency.keys() if name.endswith("_tokens_per_s"))
    ratios = {name: _ratio(after.latency[name], before.latency[name]) for name in rates}
    return {name: value for name, value in ratios.items() if value is not None}


def weight_bytes(directory: str | Path | None) -> int | None:
    """Bytes of the weight files in a checkpoint folder; ``None`` if it is not a local folder."""
    if not directory or not Path(directory).is_dir():
        return None
    files = [f for f in Path(directory).iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file()]
    return sum(f.stat().st_size for f in files) if files else None


class StageMemory(BaseModel):
    """Resident memory of one stage in MB: at its start (``None`` where unknown) and its peak."""

    start_mb: float | None
    peak_mb: float


class RecoveryStep(BaseModel):
    """One recovery plugin's turn: its own report, and the perplexity before and after it (``None`` unmeasured)."""

    plugin: str
    report: dict[str, Any] | None
    """``None`` when the plugin left the model as it was."""
    seconds: float
    perplexity_before: float | None
    perplexity_after: float | None


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
    """Per stage: resident memory at its start and its peak (the slicing stage's peak stays near one layer's new
    weights beyond the model, since layers are sliced one at a time)."""
    stock: bool
    """Whether ``model/`` loads with stock ``AutoModelForCausalLM.from_pretrained``."""
    pruning: dict[str, Any]
    """The pruner's own report per dimension (settings, learning curves)."""
    recovery: list[RecoveryStep] = []
    """The recovery steps in the order they ran; empty when none was selected."""
    versions: dict[str, str]
    config: RunConfig
    disk_bytes: DiskBytes | None = None
    baseline: Baseline | None = None

    @computed_field
    @property
    def retention(self) -> Retention:
        return retention(self.metrics["before"], self.metrics["after"])

    @computed_field
    @property
    def speedup(self) -> dict[str, float]:
        """``after / before`` of each median throughput: above 1 means faster."""
        return speedup(self.metrics["before"], self.metrics["after"])

    @computed_field
    @property
    def ideal_speedup(self) -> float | None:
        """The decode speedup the removed weights allow at most: a token reads every weight once (a tied head the whole
        embedding), so bandwidth-bound decoding gains at most weight bytes before / after, i.e. the parameter ratio."""
        return self.params.before / self.params.after if self.params.after else None


def package_versions(packages: Iterable[str] = REPORTED_PACKAGES, *, python: bool = True) -> dict[str, str]:
    """Python's version (with ``python``) and each of ``packages``' installed one, or ``not installed``."""
    versions = {"python": platform.python_version()} if python else {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
