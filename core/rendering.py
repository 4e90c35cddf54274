"""The report's figures as lines of text, the same wherever a report is shown: ``core run``'s summary and the files
the built-in ``report`` plugin writes (``report.md``, the model card). The data model is :mod:`prunekit.output`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit.payloads import SCALAR_METRICS

if TYPE_CHECKING:
    from prunekit.output import Params, Report
    from prunekit.payloads import Metrics


def metric_rows(before: Metrics, after: Metrics) -> list[tuple[str, float | None, float | None]]:
    """(name, before, after) for every metric either stage measured, in a stable order."""
    rows: list[tuple[str, float | None, float | None]] = []
    for name in SCALAR_METRICS:
        if getattr(before, name) is not None or getattr(after, name) is not None:
            rows.append((name, getattr(before, name), getattr(after, name)))
    for task in sorted(before.tasks.keys() | after.tasks.keys()):
        b, a = before.tasks.get(task, {}), after.tasks.get(task, {})
        rows += [(f"{task} {m}", b.get(m), a.get(m)) for m in sorted(b.keys() | a.keys())]
    for group in ("latency", "extra"):
        b, a = getattr(before, group), getattr(after, group)
        rows += [(name, b.get(name), a.get(name)) for name in sorted(b.keys() | a.keys())]
    return rows


def speedup_line(report: Report) -> str | None:
    """The measured speedups beside the ideal one (:attr:`Report.ideal_speedup`)."""
    if not report.speedup:
        return None
    rates = ", ".join(f"{name.removesuffix('_tokens_per_s')} {value:.2f}×" for name, value in report.speedup.items())
    ideal = ("" if report.ideal_speedup is None
             else f"; ideal {report.ideal_speedup:.2f}× (weight bytes before / after)")
    return f"Speedup (after / before, median tokens/s): {rates}{ideal}."


def generation_lines(report: Report, bullet: str) -> list[str]:
    """The ``generation`` evaluator's continuations of one prompt: a heading, then one ``bullet`` line per stage."""
    found = {stage: report.metrics[stage].details.get("generation") for stage in ("before", "after")}
    if not all(found.values()):
        return []
    first = found["before"]
    lines = [f"Greedy continuation ({first['new_tokens']} tokens) of {first['prompt']!r}:"]
    lines += [f"{bullet}{stage}: {' '.join(shown['text'].split())!r}" for stage, shown in found.items()]
    return lines


def parameter_rows(params: Params) -> list[tuple[str, int, int, float]]:
    """(part, before, after, share of the uncompressed model) for the decoder layers, each dimension's units within
    them and what lies outside them; empty where nothing was counted."""
    if params.decoder_layers is None or params.outside_layers is None:
        return []
    share = params.share
    rows = [("decoder layers", params.decoder_layers.before, params.decoder_layers.after, share["decoder_layers"])]
    rows += [(f"{name} units", part.before, part.after, share[name]) for name, part in params.units.items()]
    outside = params.outside_layers
    rows.append(("outside the layers", outside.before, outside.after, share["outside_layers"]))
    return rows


def reach_line(params: Params, dimensions: list[str]) -> str | None:
    """How much of the model the sliced ``dimensions`` can remove at most: the share of the parameters they hold
    (depth: the decoder layers), and what lies out of every layer dimension's reach."""
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
