"""What a run leaves behind: ``model/``, ``report.json`` and ``report.md``, each written atomically.

Everything is written under a temporary name and renamed into place, so an interrupted run never
leaves a half-written model or report that looks complete.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, computed_field

from prunekit.config import RunConfig
from prunekit.payloads import Metrics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

REPORTED_PACKAGES = ("torch", "transformers", "lm_eval", "peft", "pluggy")


class Count(BaseModel):
    """Parameters of one part of the model before and after compression."""

    before: int
    after: int


class Params(BaseModel):
    before: int
    after: int
    decoder_layers: Count | None = None
    """Parameters inside the decoder layers. The rest (embeddings, LM head, final norm:
    ``outside_layers``) is out of reach of every per-layer dimension."""
    units: dict[str, Count] = {}
    """Per dimension within the layers (``ffn``, ``heads``), the parameters its units hold: what
    removing every unit would remove, so more than any ratio of that dimension can."""

    @computed_field
    @property
    def reduction(self) -> float:
        """Whole-model parameter reduction, whatever dimension the ratio targeted."""
        return 1 - self.after / self.before if self.before else 0.0

    @computed_field
    @property
    def outside_layers(self) -> Count | None:
        """Parameters outside the decoder layers: embeddings, LM head (once where tied), final norm."""
        if self.decoder_layers is None:
            return None
        return Count(before=self.before - self.decoder_layers.before, after=self.after - self.decoder_layers.after)

    @computed_field
    @property
    def share(self) -> dict[str, float]:
        """Each part's share of the uncompressed model's parameters: ``decoder_layers``,
        ``outside_layers`` and every dimension of ``units``. A dimension's share is the most
        slicing it can remove from the whole model."""
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
    return Retention(
        tasks=tasks,
        average_before=average_before,
        average_after=average_after,
        average_retention=_ratio(average_after, average_before),
        mean_task_retention=statistics.fmean(ratios) if ratios else None,
    )


def speedup(before: Metrics, after: Metrics) -> dict[str, float]:
    """``after / before`` of every throughput (latency keys ending in ``_tokens_per_s``) both measured."""
    return {
        name: value
        for name in sorted(before.latency.keys() & after.latency.keys())
        if name.endswith("_tokens_per_s") and (value := _ratio(after.latency[name], before.latency[name])) is not None
    }


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
    """One recovery plugin's turn: its own report, and the perplexity before and after it
    (``None`` where no evaluator measures perplexity)."""

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
    """Per stage: resident memory at its start and its peak (the slicing stage's peak stays near
    one layer's new weights beyond the model, since layers are sliced one at a time)."""
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
        """The decode speedup the removed weights allow at most: generating a token reads every
        weight once (the LM head reads the whole embedding matrix where tied), so decoding bound
        by memory bandwidth gains at most the ratio of weight bytes, before / after. Both are
        stored in one dtype, so that is the ratio of parameters."""
        return self.params.before / self.params.after if self.params.after else None


class Evaluation(BaseModel):
    """What ``core eval`` prints: one model's metrics, measured as a run measures them."""

    prunekit_version: str
    model: str
    params: int
    disk_bytes: int | None = None
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


STAGED = re.compile(r"^\..+\.(tmp|old)-\d+$")
"""The names :func:`temporary_sibling` gives, so that a rerun can sweep what a killed one left."""


def temporary_sibling(target: Path, kind: str = "tmp") -> Path:
    """The name ``target`` is written under before it is renamed into place (``old``: a
    directory being replaced)."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}")


def replace_dir(staging: Path, target: Path) -> None:
    """Rename the finished directory ``staging`` onto ``target``, replacing an earlier one (which a
    rename alone cannot): the old one is moved aside first and removed after, so ``target`` is
    always whole."""
    if target.exists():
        replaced = temporary_sibling(target, "old")
        os.replace(target, replaced)
        os.replace(staging, target)
        shutil.rmtree(replaced)
    else:
        os.replace(staging, target)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, target: Path) -> None:
    """``save_pretrained`` (safetensors) with the tokenizer, renamed into ``target`` when complete."""
    staging = temporary_sibling(target)
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    replace_dir(staging, target)  # a rerun's model replaces the earlier one


def write_text(target: Path, text: str) -> None:
    staging = temporary_sibling(target)
    staging.write_text(text)
    os.replace(staging, target)


def write_report(report: Report, directory: Path) -> None:
    """``report.md`` (with the recovery plot), the saved model's card and ``report.json``, last:
    a directory that holds it holds a finished run (:mod:`prunekit.rundir`)."""
    found = recovery_curves(report.recovery)
    if found:
        plot_curves(found, directory / RECOVERY_PLOT)
    card = None
    if (directory / "model").is_dir():
        from prunekit.modelcard import write_card

        card = write_card(report, directory / "model").relative_to(directory).as_posix()
    write_text(directory / "report.md", render_markdown(report, card))
    write_text(directory / "report.json", report.model_dump_json(indent=2) + "\n")


RECOVERY_PLOT = "recovery.png"


def curves(section: dict[str, Any] | None) -> dict[str, list[dict[str, float]]]:
    """The curves in a plugin's report section: its lists of two-number points ``{x: .., y: ..}``,
    such as a recovery's ``train_loss: [{step, loss}, ...]``, by name."""
    return {
        name: value
        for name, value in (section or {}).items()
        if isinstance(value, list) and value and all(
            isinstance(point, dict) and len(point) == 2
            and all(isinstance(v, (int, float)) for v in point.values()) for point in value
        )
    }


def recovery_curves(steps: list[RecoveryStep]) -> dict[str, list[dict[str, float]]]:
    """Every step's curves, named ``<plugin> <curve>``."""
    return {f"{step.plugin} {name}": points for step in steps for name, points in curves(step.report).items()}


def plot_curves(found: dict[str, list[dict[str, float]]], target: Path) -> None:
    """One figure with every curve, written atomically with matplotlib's file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, points in found.items():
        xs, ys = zip(*(tuple(point.values()) for point in points))
        axis.plot(xs, ys, marker="." if len(points) < 50 else None, label=name.replace("_", " "))
    axis.set_xlabel(next(iter(next(iter(found.values()))[0])))
    axis.legend()
    figure.tight_layout()
    staging = temporary_sibling(target)
    figure.savefig(staging, dpi=110, format="png")
    plt.close(figure)
    os.replace(staging, target)


def _recovery_lines(steps: list[RecoveryStep]) -> list[str]:
    if not steps:
        return []
    lines = ["## Recovery", "", "| step | plugin | perplexity before | perplexity after | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {number} | {step.plugin} | {_fmt(step.perplexity_before)} | {_fmt(step.perplexity_after)} | "
              f"{step.seconds:.1f} |" for number, step in enumerate(steps, 1)]
    for step in steps:
        found = curves(step.report)
        lines += ["", f"### {step.plugin}", ""]
        if step.report is None:
            lines.append("- left the model as it was")
        lines += [f"- {name}: {_compact(value)}" for name, value in (step.report or {}).items() if name not in found]
    found = recovery_curves(steps)
    if found:
        lines += ["", f"![{', '.join(found)}]({RECOVERY_PLOT})"]
    return lines + [""]


def _retention(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return ""
    return f"{after / before:.3f}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def metric_rows(before: Metrics, after: Metrics) -> list[tuple[str, float | None, float | None]]:
    """(name, before, after) for every metric either stage measured, in a stable order."""
    rows: list[tuple[str, float | None, float | None]] = []
    for name in ("perplexity", "loss"):
        if getattr(before, name) is not None or getattr(after, name) is not None:
            rows.append((name, getattr(before, name), getattr(after, name)))
    for task in sorted(before.tasks.keys() | after.tasks.keys()):
        b, a = before.tasks.get(task, {}), after.tasks.get(task, {})
        rows += [(f"{task} {m}", b.get(m), a.get(m)) for m in sorted(b.keys() | a.keys())]
    for group in ("latency", "extra"):
        b, a = getattr(before, group), getattr(after, group)
        rows += [(name, b.get(name), a.get(name)) for name in sorted(b.keys() | a.keys())]
    return rows


def _compact(value: Any) -> str:
    """A detail value on one line: floats to 4 significant digits, containers inline."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return str(value)


def _baseline_line(baseline: Baseline | None) -> list[str]:
    if baseline is None:
        return []
    parts = []
    if baseline.cached:
        parts.append(f"{', '.join(baseline.cached)} from the cache (model fingerprint {baseline.fingerprint})")
    if baseline.measured:
        parts.append(f"{', '.join(baseline.measured)} measured in this run")
    return [f"- baseline (before): {'; '.join(parts)}"] if parts else []


def _summary_lines(report: Report) -> list[str]:
    lines = []
    kept = report.retention
    if kept.average_retention is not None:
        scored_by = ", ".join(f"{t.metric} for {task}" for task, t in kept.tasks.items())
        lines.append(
            f"Zero-shot average ({scored_by}): {kept.average_before:.4f} → {kept.average_after:.4f}, "
            f"{kept.average_retention:.1%} retained (mean per-task retention {kept.mean_task_retention:.1%})."
        )
    speed = speedup_line(report)
    if speed:
        lines.append(speed)
    lines += generation_lines(report, bullet="- ")
    return lines + [""] if lines else []


def speedup_line(report: Report) -> str | None:
    """The measured speedups beside the ideal one (:attr:`Report.ideal_speedup`)."""
    if not report.speedup:
        return None
    rates = ", ".join(f"{name.removesuffix('_tokens_per_s')} {value:.2f}×" for name, value in report.speedup.items())
    ideal = "" if report.ideal_speedup is None else f"; ideal {report.ideal_speedup:.2f}× (weight bytes before / after)"
    return f"Speedup (after / before, median tokens/s): {rates}{ideal}."


def generation_lines(report: Report, bullet: str) -> list[str]:
    """The ``generation`` evaluator's continuations of one prompt: a heading, then one line per
    stage that starts with ``bullet``."""
    found = {stage: report.metrics[stage].details.get("generation") for stage in ("before", "after")}
    if not all(found.values()):
        return []
    first = found["before"]
    lines = [f"Greedy continuation ({first['new_tokens']} tokens) of {first['prompt']!r}:"]
    lines += [f"{bullet}{stage}: {' '.join(shown['text'].split())!r}" for stage, shown in found.items()]
    return lines


def _per_dimension(ratios: dict) -> str:
    """The per-dimension ratios that override ``ratio`` (a search's chosen configuration)."""
    if not ratios:
        return ""
    return " (per dimension: " + ", ".join(f"{dim.value} {ratio:.4g}" for dim, ratio in ratios.items()) + ")"


def parameter_rows(params: Params) -> list[tuple[str, int, int, float]]:
    """(part, before, after, share of the uncompressed model) for the decoder layers, each
    dimension's units within them and what lies outside them; empty where nothing was counted."""
    if params.decoder_layers is None or params.outside_layers is None:
        return []
    share = params.share
    rows = [("decoder layers", params.decoder_layers.before, params.decoder_layers.after, share["decoder_layers"])]
    rows += [(f"{name} units", part.before, part.after, share[name]) for name, part in params.units.items()]
    outside = params.outside_layers
    rows.append(("outside the layers", outside.before, outside.after, share["outside_layers"]))
    return rows


def reach_line(params: Params, dimensions: list[str]) -> str | None:
    """How much of the model the sliced ``dimensions`` can remove at most: the share of the
    parameters they hold (depth: the decoder layers), and what lies out of every layer
    dimension's reach."""
    share = params.share
    if "outside_layers" not in share:
        return None
    held = {f"{dim} units" if dim in params.units else "decoder layers":
            share[dim] if dim in params.units else share["decoder_layers"]
            for dim in dimensions if dim in params.units or dim == "layers"}
    if not held:
        return None
    parts = ", ".join(f"the {name} hold {value:.1%}" for name, value in held.items())
    return (f"reach: of the parameters, {parts} (the most slicing them can remove); "
            f"{share['outside_layers']:.1%} lie outside the decoder layers (embeddings, head, final norm)")


def render_markdown(report: Report, card: str | None = None) -> str:
    """``report.md``; ``card``: the saved model's card (``model/README.md``) to link."""
    lines = [
        f"# prunekit run: {report.model}",
        "",
        *([f"- model card: [{card}]({card})"] if card else []),
        f"- plugins: {', '.join(report.plugins) or 'none'}",
        f"- ratio: {report.ratio:g}" + _per_dimension(report.config.ratios),
        f"- parameters: {report.params.before:,} → {report.params.after:,} "
        f"({report.params.reduction:.1%} fewer)",
        f"- stock checkpoint: {'yes' if report.stock else 'no — load with prunekit.load(DIR)'}",
        f"- peak memory (RSS): {report.peak_rss_mb:.0f} MB",
    ]
    reach = reach_line(report.params, list(report.pruning))
    if reach:
        lines.append(f"- {reach}")
    if report.disk_bytes is not None:
        before = "?" if report.disk_bytes.before is None else f"{report.disk_bytes.before / 1e6:,.1f} MB"
        lines.append(f"- weights on disk: {before} → {report.disk_bytes.after / 1e6:,.1f} MB")
    lines += _baseline_line(report.baseline) + [""]
    parts = parameter_rows(report.params)
    if parts:
        lines += ["| parameters | before | after | share of the model before |", "|---|---|---|---|"]
        lines += [f"| {name} | {before:,} | {after:,} | {share:.1%} |" for name, before, after, share in parts]
        lines.append("")
    rows = metric_rows(report.metrics["before"], report.metrics["after"])
    if rows:
        lines += ["| metric | before | after | after / before |", "|---|---|---|---|"]
        lines += [f"| {n} | {_fmt(b)} | {_fmt(a)} | {_retention(b, a)} |" for n, b, a in rows]
        lines.append("")
    lines += _summary_lines(report)
    lines += _recovery_lines(report.recovery)
    details = report.metrics["after"].details
    if details:
        lines += ["How it was measured (the same for before and after):", ""]
        lines += [f"- {name}: {_compact(value)}" for name, value in details.items()]
        lines.append("")
    lines += ["| stage | seconds | memory at start (MB) | peak memory (MB) |", "|---|---|---|---|"]
    for stage, seconds in report.timings.items():
        used = report.memory.get(stage)
        start = "" if used is None or used.start_mb is None else f"{used.start_mb:.0f}"
        peak = "" if used is None else f"{used.peak_mb:.0f}"
        lines.append(f"| {stage} | {seconds:.2f} | {start} | {peak} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()), ""]
    return "\n".join(lines)

