"""What a search leaves for a person: ``search.json``, ``report.md`` and ``frontier.png``.

The report states the chosen configuration with its measured latency and per-task retention, the
selector's reason for stopping, what the search spent (evaluation batches, in full evaluations,
against an exhaustive grid's cost, and latency timings), every configuration evaluated, and the
quality/latency frontier: feasible and infeasible configurations, the budget, the Pareto front
and the choice.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from prunekit import files
from prunekit.plugins import figures
from prunekit.plugins.search.driver import Outcome
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.payloads import Candidate
from prunekit.plugins.search.space import Space


class Evaluated(BaseModel):
    """One configuration as the search last saw it."""

    key: str
    plugin: str
    ratios: dict[str, float]
    structure: str
    latency: float | None
    """In the budget's unit (fraction of the uncompressed latency, or ms)."""
    milliseconds: float | None
    feasible: bool | None
    batches: int
    """Evaluation batches its quality was measured on."""
    quality: float | None
    retention: dict[str, float] | None


class Summary(BaseModel):
    """The machine-readable result of a search (``search.json``, ``core search --json``)."""

    model: str
    pruners: list[str]
    selectors: list[str]
    objective: str
    budget: str | None
    latency_unit: str
    budget_limit: float | None
    tasks: list[str]
    batches: int
    reference: dict[str, float]
    """The uncompressed model's full-evaluation score per task."""
    reference_milliseconds: float | None
    """The uncompressed model's latency, median over every timing taken next to a candidate."""
    best: Evaluated | None
    note: str
    evaluated: list[Evaluated]
    pareto: list[str]
    """Keys of the configurations no other measured one beats on both quality and latency."""
    candidates: int
    evaluations: float
    """Full evaluations spent: batches measured / batches per full evaluation."""
    evaluation_batches: int
    timings: int
    """Model shapes timed."""
    directory: str
    storage: str
    study: str
    run: str | None = None
    """Directory of the chosen configuration's full run (stock checkpoint and run report)."""


def evaluated(outcome: Outcome, space: Space, objective: Objective, budget: float | None) -> list[Evaluated]:
    """Every candidate that was tried, with everything measured of it over all its trials, and
    one candidate of each shape that was only timed."""
    tried = {trial.candidate.key for trial in outcome.history}
    shapes = {space.structure(trial.candidate) for trial in outcome.history}
    rows = []
    for candidate in space.candidates():
        shape = space.structure(candidate)
        if candidate.key not in tried and (shape in shapes or shape not in outcome.timings):
            continue
        shapes.add(shape)
        measured: dict[int, dict[str, float]] = {}
        latency = outcome.latency.get(candidate.key)
        feasible = None if latency is None else budget is None or latency <= budget
        for trial in outcome.history:
            if trial.candidate.key == candidate.key:
                measured.update(trial.scores)
                feasible = trial.feasible
        retention = outcome.reference.retention(measured) if measured else None
        timing = outcome.timings.get(space.structure(candidate))
        rows.append(
            Evaluated(
                key=candidate.key,
                plugin=candidate.plugin,
                ratios={d.value: r for d, r in candidate.ratios.items()},
                structure=shape,
                latency=latency,
                milliseconds=None if timing is None else timing.milliseconds,
                feasible=feasible,
                batches=len(measured),
                quality=None if retention is None else objective(retention),
                retention=retention,
            )
        )
    return rows


def pareto(rows: list[Evaluated]) -> list[str]:
    """Keys of measured configurations that no other is at least as good as on both axes (and
    better on one): higher quality, lower latency."""
    scored = [r for r in rows if r.quality is not None and r.latency is not None]
    front = []
    for row in scored:
        beaten = any(
            o.quality >= row.quality and o.latency <= row.latency and (o.quality > row.quality or o.latency < row.latency)
            for o in scored
        )
        if not beaten:
            front.append(row.key)
    return sorted(front, key=lambda key: next(r.latency for r in scored if r.key == key))


def plot_frontier(summary: Summary, target: Path) -> None:
    """Quality against latency for every measured configuration (matplotlib's file-only backend)."""
    plt = figures.pyplot()

    figure, axis = plt.subplots(figsize=(7, 4.5))
    rows = [r for r in summary.evaluated if r.latency is not None]
    measured = [r for r in rows if r.quality is not None]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, pruner in enumerate(summary.pruners):
        mine = [r for r in measured if r.plugin == pruner]
        axis.scatter([r.latency for r in mine], [r.quality for r in mine], color=colours[index % len(colours)],
                     label=f"{pruner} (quality measured)", alpha=0.8)
    over = [r for r in rows if r.quality is None]
    if over:
        low = min((r.quality for r in measured), default=0.0)
        axis.scatter([r.latency for r in over], [low] * len(over), marker="x", color="grey",
                     label="over budget (quality not measured)")
    front = [r for key in summary.pareto for r in measured if r.key == key]
    if front:
        axis.plot([r.latency for r in front], [r.quality for r in front], color="black", linewidth=1,
                  label="Pareto front")
    if summary.budget_limit is not None:
        axis.axvline(summary.budget_limit, color="red", linestyle="--", label=f"budget {summary.budget}")
    if summary.best is not None and summary.best.quality is not None:
        axis.scatter([summary.best.latency], [summary.best.quality], s=200, facecolors="none", edgecolors="red",
                     linewidths=2, label=f"chosen: {summary.best.key}")
    axis.set_xlabel(f"latency ({summary.latency_unit})")
    axis.set_ylabel(summary.objective)
    axis.set_title(f"{summary.model}: quality vs latency")
    axis.legend(fontsize="small")
    figures.save_figure(figure, target, dpi=120)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def render_markdown(summary: Summary) -> str:
    best = summary.best
    lines = [
        f"# prunekit search: {summary.model}",
        "",
        f"- pruners: {', '.join(summary.pruners)}; selector: {', '.join(summary.selectors)}",
        f"- latency budget: {summary.budget or 'none (quality/latency Pareto front)'}",
        f"- objective: {summary.objective} over {', '.join(summary.tasks) or 'the quality tasks (none measured)'}",
        "- uncompressed model: "
        + ", ".join(f"{task} {score:.4g}" for task, score in summary.reference.items())
        + (f"; latency {summary.reference_milliseconds:.4g} ms" if summary.reference_milliseconds else ""),
        f"- evaluations spent: {summary.evaluations:.2f} full evaluations ({summary.evaluation_batches} batches of "
        f"{summary.batches}); an exhaustive grid costs {summary.candidates} ({summary.candidates} configurations); "
        f"{summary.timings} model shapes timed",
        f"- selector's verdict: {summary.note}",
        "",
    ]
    if best is not None:
        lines += [
            "## Chosen configuration",
            "",
            f"**{best.key}**: latency {_fmt(best.latency)} {summary.latency_unit}"
            + (f" ({best.milliseconds:.4g} ms)" if best.milliseconds else "")
            + f", {summary.objective} {_fmt(best.quality)} measured on {best.batches} of {summary.batches} batches.",
            "",
            "| task | retention |",
            "|---|---|",
            *(f"| {task} | {value:.4f} |" for task, value in (best.retention or {}).items()),
            "",
        ]
        if summary.run:
            lines += [f"Stock checkpoint and full run report (measured afresh): `{summary.run}/model`, "
                      f"`{summary.run}/report.md`.", ""]
    elif summary.budget is None:
        lines += [f"## Pareto front ({len(summary.pareto)} configurations)", "",
                  *(f"- {key}" for key in summary.pareto), ""]
    lines += [
        "## Quality against latency",
        "",
        "![frontier](frontier.png)",
        "",
        "## Every configuration evaluated",
        "",
        f"| configuration | shape | latency ({summary.latency_unit}) | ms | within budget | batches | {summary.objective} |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted(summary.evaluated, key=lambda r: (r.quality is None, -(r.quality or 0.0), r.key))
    for row in order:
        within = "" if row.feasible is None else ("yes" if row.feasible else "no")
        lines.append(
            f"| {row.key} | {row.structure} | {_fmt(row.latency)} | {_fmt(row.milliseconds)} | {within} | "
            f"{row.batches} | {_fmt(row.quality)} |"
        )
    lines += [
        "",
        f"Study `{summary.study}` in `{summary.storage}`: rerun the same command to resume it, or run more "
        f"workers against it; `optuna-dashboard {summary.storage}` shows it.",
        "",
    ]
    return "\n".join(lines)


def write(summary: Summary, directory: Path) -> None:
    files.write_text(directory / "search.json", summary.model_dump_json(indent=2) + "\n")
    plot_frontier(summary, directory / "frontier.png")
    files.write_text(directory / "report.md", render_markdown(summary))


def best_row(rows: list[Evaluated], best: Candidate | None) -> Evaluated | None:
    return None if best is None else next((row for row in rows if row.key == best.key), None)
