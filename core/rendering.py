"""What a run leaves beside its model: ``report.json``, ``report.md`` and the recovery plot, and
the report's lines that the command line and the model card show.

The data model is :mod:`prunekit.output`; every file is written atomically (:mod:`prunekit.files`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunekit import files
from prunekit.output import Baseline, Params, RecoveryStep, Report
from prunekit.payloads import Metrics


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
    files.write_text(directory / "report.md", render_markdown(report, card))
    files.write_text(directory / "report.json", report.model_dump_json(indent=2) + "\n")


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
    files.save_figure(figure, target, dpi=110)


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

