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

from prunekit.chance import AboveChance, above_chance_retention, average_stderr
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
    before_stderr: float | None = None
    """The standard error of ``before`` where the evaluator gives one (lm-eval does)."""
    after_stderr: float | None = None
    chance: float | None = None
    """The accuracy of guessing: the mean over the scored examples of 1 / number of choices, where the evaluator
    gives it (``zeroshot`` does for multiple-choice tasks)."""
    above_chance: AboveChance | None = None
    """``(after − chance) / (before − chance)`` ± its standard error (:mod:`prunekit.chance`); ``None`` without
    ``chance``."""


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
    average_before_stderr: float | None = None
    """``sqrt(Σ se²) / k`` over the tasks (scored independently); ``None`` unless every task has a standard error."""
    average_after_stderr: float | None = None
    average_chance: float | None = None
    """Mean of the tasks' chance levels; ``None`` unless every task has one."""
    average_above_chance: AboveChance | None = None
    """Above-chance retention of the averages, from the average accuracies, chance and standard errors."""


def _ratio(after: float | None, before: float | None) -> float | None:
    return after / before if after is not None and before else None


def _sections(details: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Each evaluator's ``details[<evaluator>][key]`` mapping, where it records one."""
    return [section[key] for section in details.values()
            if isinstance(section, dict) and isinstance(section.get(key), dict)]


def task_stderr(details: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Standard errors ``{task: {metric: value}}`` that evaluators record under ``details[...]["stderr"]``
    (``zeroshot`` does, from lm-eval)."""
    found: dict[str, dict[str, float]] = {}
    for recorded in _sections(details, "stderr"):
        for task, metrics in recorded.items():
            if isinstance(metrics, dict):
                found.setdefault(task, {}).update(metrics)
    return found


def task_chance(details: dict[str, Any]) -> dict[str, float]:
    """Chance levels ``{task: value}`` that evaluators record under ``details[...]["chance"]`` (``zeroshot`` does for
    multiple-choice tasks)."""
    return {task: value for recorded in _sections(details, "chance") for task, value in recorded.items()
            if isinstance(value, (int, float))}


def _above_chance(after: float, after_stderr: float | None, before: float, before_stderr: float | None,
                  chance: float | None) -> AboveChance | None:
    return None if chance is None else above_chance_retention(after, after_stderr, before, before_stderr, chance)


def _average_stderr(stderrs: list[float | None]) -> float | None:
    return None if None in stderrs else average_stderr(stderrs)


def retention(before: Metrics, after: Metrics) -> Retention:
    """Per-task and averaged retention over the tasks both stages scored, plain and above chance. The chance levels
    are the "after" stage's, else the "before" one's: both scored the same examples."""
    errors = {"before": task_stderr(before.details), "after": task_stderr(after.details)}
    chance = {**task_chance(before.details), **task_chance(after.details)}
    tasks = {}
    for task, metric in after.primary_metric.items():
        if task in before.tasks and metric in before.tasks[task]:
            b, a = before.tasks[task][metric], after.tasks[task][metric]
            b_se, a_se = (errors[stage].get(task, {}).get(metric) for stage in ("before", "after"))
            tasks[task] = TaskRetention(metric=metric, before=b, after=a, retention=_ratio(a, b), before_stderr=b_se,
                                        after_stderr=a_se, chance=chance.get(task),
                                        above_chance=_above_chance(a, a_se, b, b_se, chance.get(task)))
    if not tasks:
        return Retention(tasks=tasks, average_before=None, average_after=None, average_retention=None,
                         mean_task_retention=None)
    average_before = statistics.fmean(t.before for t in tasks.values())
    average_after = statistics.fmean(t.after for t in tasks.values())
    ratios = [t.retention for t in tasks.values() if t.retention is not None]
    b_se = _average_stderr([t.before_stderr for t in tasks.values()])
    a_se = _average_stderr([t.after_stderr for t in tasks.values()])
    levels = [t.chance for t in tasks.values()]
    level = None if None in levels else statistics.fmean(levels)
    return Retention(tasks=tasks, average_before=average_before, average_after=average_after,
                     average_retention=_ratio(average_after, average_before),
                     mean_task_retention=statistics.fmean(ratios) if ratios else None,
                     average_before_stderr=b_se, average_after_stderr=a_se, average_chance=level,
                     average_above_chance=_above_chance(average_after, a_se, average_before, b_se, level))


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
