"""``report.md`` and the recovery plot: a finished run's report for a person to read.

The figures come from the report's data model (:mod:`prunekit.output`), and the lines the
console summary shows too from :mod:`prunekit.rendering`, so the page and the console agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunekit.plugins import figures
from prunekit.rendering import generation_lines, metric_rows, parameter_rows, reach_line, speedup_line

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from prunekit.chance import AboveChance
    from prunekit.output import Baseline, RecoveryStep, Report, Retention


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
    plt = figures.pyplot()

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, points in found.items():
        xs, ys = zip(*(tuple(point.values()) for point in points))
        axis.plot(xs, ys, marker="." if len(points) < 50 else None, label=name.replace("_", " "))
    axis.set_xlabel(next(iter(next(iter(found.values()))[0])))
    axis.legend()
    figures.save_figure(figure, target, dpi=110)


def _recovery_lines(steps: list[RecoveryStep]) -> list[str]:
    if not steps:
        return []
    lines = ["## Recovery", "", "| step | plugin | perplexity before | perplexity after | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {number} | {step.plugin} | {fmt(step.perplexity_before)} | {fmt(step.perplexity_after)} | "
              f"{step.seconds:.1f} |" for number, step in enumerate(steps, 1)]
    for step in steps:
        found = curves(step.report)
        lines += ["", f"### {step.plugin}", ""]
        if step.report is None:
            lines.append("- left the model as it was")
        lines += [f"- {name}: {compact(value)}" for name, value in (step.report or {}).items() if name not in found]
    found = recovery_curves(steps)
    if found:
        lines += ["", f"![{', '.join(found)}]({RECOVERY_PLOT})"]
    return lines + [""]


def retention(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return ""
    return f"{after / before:.3f}"


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def compact(value: Any) -> str:
    """A detail value on one line: floats to 4 significant digits, containers inline."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    return str(value)


def with_stderr(value: float | None, stderr: float | None) -> str:
    """``value ± stderr``, or the value alone where no standard error was measured."""
    text = fmt(value)
    return f"{text} ± {fmt(stderr)}" if text and stderr is not None else text


def _above_chance(kept: AboveChance | None) -> str:
    if kept is None or kept.retention is None:
        return "" if kept is None else f"not given: {kept.reason}"
    return f"{kept.retention:.3f}" + ("" if kept.stderr is None else f" ± {kept.stderr:.3f}")


def zeroshot_lines(kept: Retention) -> list[str]:
    """The zero-shot table: per task and on average, each accuracy ± its standard error, the chance level and the
    retention above chance ± its standard error (:mod:`prunekit.chance`); empty where no task was scored."""
    if not kept.tasks:
        return []
    lines = ["| zero-shot task | before | after | chance | above-chance retention |", "|---|---|---|---|---|"]
    lines += [f"| {task} ({t.metric}) | {with_stderr(t.before, t.before_stderr)} | "
              f"{with_stderr(t.after, t.after_stderr)} | {fmt(t.chance)} | {_above_chance(t.above_chance)} |"
              for task, t in kept.tasks.items()]
    lines.append(f"| average | {with_stderr(kept.average_before, kept.average_before_stderr)} | "
                 f"{with_stderr(kept.average_after, kept.average_after_stderr)} | {fmt(kept.average_chance)} | "
                 f"{_above_chance(kept.average_above_chance)} |")
    return lines + ["", "Accuracy ± its standard error (the average's: sqrt(Σ se²) / k); chance: the accuracy of "
                    "guessing on the scored examples; above-chance retention: (after − chance) / (before − "
                    "chance), ± its standard error by the delta method.", ""]


def _texts_read(section: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every text statement (``prunekit.plugins.data.describe``: source, tokens, overlap with the evaluation text)
    inside a step's report, with where it was found."""
    if isinstance(section, dict):
        if {"source", "tokens", "disjoint_from_evaluation"} <= section.keys():
            yield where, section
            return
        for key, value in section.items():
            yield from _texts_read(value, f"{where}, {key}")


def text_lines(report: Report) -> list[str]:
    """What each step calibrated or trained on, its tokens, and whether that text is disjoint from the evaluation
    text, so a reader can tell recovery from adaptation to the text a model is measured on."""
    found = [item for dimension, section in report.pruning.items()
             for item in _texts_read(section, f"{dimension} pruning")]
    found += [item for step in report.recovery for item in _texts_read(step.report, f"{step.plugin} recovery")]
    lines = [f"- {where}: {text['source']}, {text['tokens']:,} tokens; "
             f"{'disjoint from' if text['disjoint_from_evaluation'] else 'NOT disjoint from'} the evaluation text "
             f"({text.get('evaluation_overlap', '')})" for where, text in found]
    return ["## Text read", "", *lines, ""] if lines else []


def _baseline_line(baseline: Baseline | None) -> list[str]:
    if baseline is None:
        return []
    parts = []
    if baseline.cached:
        parts.append(f"{', '.join(baseline.cached)} from the cache (model fingerprint {baseline.fingerprint})")
    if baseline.measured:
        parts.append(f"{', '.join(baseline.measured)} measured in this run")
    return [f"- baseline (before): {'; '.join(parts)}"] if parts else []


def summary_lines(report: Report) -> list[str]:
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


def per_dimension(ratios: dict) -> str:
    """The per-dimension ratios that override ``ratio`` (a search's chosen configuration)."""
    if not ratios:
        return ""
    return " (per dimension: " + ", ".join(f"{dim.value} {ratio:.4g}" for dim, ratio in ratios.items()) + ")"


def render_markdown(report: Report, card: str | None = None) -> str:
    """``report.md``; ``card``: the saved model's card (``model/README.md``) to link."""
    lines = [
        f"# prunekit run: {report.model}",
        "",
        *([f"- model card: [{card}]({card})"] if card else []),
        f"- plugins: {', '.join(report.plugins) or 'none'}",
        f"- ratio: {report.ratio:g}" + per_dimension(report.config.ratios),
        f"- parameters: {report.params.before:,} → {report.params.after:,} "
        f"({report.params.reduction:.1%} fewer)",
        f"- stock checkpoint: {'yes' if report.stock else 'no — load with prunekit.load(DIR)'}",
        f"- peak memory (RSS): {report.peak_rss_mb:.0f} MB",
        *(["- streamed one decoder layer at a time (`--stream`): not evaluated; `core eval --offload` measures a "
           "model that does not fit (docs/streaming.md)"] if report.config.stream else []),
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
        lines += [f"| {n} | {fmt(b)} | {fmt(a)} | {retention(b, a)} |" for n, b, a in rows]
        lines.append("")
    lines += zeroshot_lines(report.retention)
    lines += summary_lines(report)
    lines += text_lines(report)
    lines += _recovery_lines(report.recovery)
    details = report.metrics["after"].details
    if details:
        lines += ["How it was measured (the same for before and after):", ""]
        lines += [f"- {name}: {compact(value)}" for name, value in details.items()]
        lines.append("")
    lines += ["| stage | seconds | memory at start (MB) | peak memory (MB) |", "|---|---|---|---|"]
    for stage, seconds in report.timings.items():
        used = report.memory.get(stage)
        start = "" if used is None or used.start_mb is None else f"{used.start_mb:.0f}"
        peak = "" if used is None else f"{used.peak_mb:.0f}"
        lines.append(f"| {stage} | {seconds:.2f} | {start} | {peak} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()), ""]
    return "\n".join(lines)
