"""Measured points of a sweep: one compressed model's loss and accuracy next to its baseline's.

A point comes from one run's ``report.json`` (the pipeline measures the uncompressed model as
``before`` and the compressed one as ``after``, with the same evaluators) and the recovery data
size the sweep gave it. Test loss is the mean token cross-entropy on held-out text (the
evaluators' ``loss``, else ``log(perplexity)``); accuracy is the mean over the zero-shot tasks of
each task's primary metric (the one the evaluator names, else ``acc_norm`` where lm-eval reports
it and ``acc`` otherwise: the pruning papers' convention), or of one named metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from prunekit.errors import UsageError

RESULTS_FILE = "results.json"
PRIMARY = "primary"
PRIMARY_ORDER = ("acc_norm", "acc")


class Point(BaseModel):
    """One (model, ratio, recovery size) with its scores and its uncompressed model's."""

    model: str
    ratio: float
    recover_size: int
    loss: float | None
    baseline_loss: float | None
    accuracy: float | None
    baseline_accuracy: float | None
    tasks: dict[str, float]
    """Per-task accuracy of the compressed model (the metric ``accuracy`` averages)."""
    baseline_tasks: dict[str, float]
    run: str
    """The run directory whose ``report.json`` the point was read from."""


def _task_metric(values: dict[str, float], metric: str) -> float | None:
    """lm-eval names a metric ``acc`` or, with its filter, ``acc,none``."""
    value = values.get(metric, values.get(f"{metric},none"))
    return None if value is None else float(value)


def task_scores(before: dict[str, Any], after: dict[str, Any], metric: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per-task scores of the baseline and the compressed model (two stages' metrics), on the
    tasks and the metric both stages report, so the two are always compared like for like.
    ``primary`` takes the metric the evaluator named primary, else ``acc_norm``, else ``acc``."""
    before_tasks, after_tasks = before.get("tasks", {}), after.get("tasks", {})
    primary = {**before.get("primary_metric", {}), **after.get("primary_metric", {})}
    base: dict[str, float] = {}
    compressed: dict[str, float] = {}
    for task in sorted(before_tasks.keys() & after_tasks.keys()):
        if metric != PRIMARY:
            names: tuple[str, ...] = (metric,)
        else:
            names = (primary[task], *PRIMARY_ORDER) if task in primary else PRIMARY_ORDER
        for name in names:
            b, a = _task_metric(before_tasks[task], name), _task_metric(after_tasks[task], name)
            if a is not None and b is not None:
                base[task], compressed[task] = b, a
                break
    return base, compressed


def _loss(metrics: dict[str, Any]) -> float | None:
    if metrics.get("loss") is not None:
        return float(metrics["loss"])
    perplexity = metrics.get("perplexity")
    return None if perplexity is None else math.log(perplexity)


def _mean(scores: dict[str, float]) -> float | None:
    return sum(scores.values()) / len(scores) if scores else None


def point_from_report(report: dict[str, Any], recover_size: int, run: Path, metric: str = PRIMARY) -> Point:
    """The point a finished run measured."""
    before, after = report["metrics"]["before"], report["metrics"]["after"]
    base, compressed = task_scores(before, after, metric)
    return Point(
        model=report["model"],
        ratio=report["ratio"],
        recover_size=recover_size,
        loss=_loss(after),
        baseline_loss=_loss(before),
        accuracy=_mean(compressed),
        baseline_accuracy=_mean(base),
        tasks=compressed,
        baseline_tasks=base,
        run=str(run),
    )


POINTS = TypeAdapter(list[Point])


def write_points(points: list[Point], path: Path) -> None:
    from prunekit.files import write_text

    write_text(path, POINTS.dump_json(points, indent=2).decode() + "\n")


def read_points(paths: list[Path]) -> list[Point]:
    """Every point in the given ``results.json`` files or sweep directories (several may be
    combined, e.g. sweeps of different models, to fit one law across them)."""
    if not paths:
        raise UsageError("give at least one results file or sweep directory")
    points: list[Point] = []
    for path in paths:
        file = path / RESULTS_FILE if path.is_dir() else path
        if not file.is_file():
            raise UsageError(f"no results at {file} (run `core laws sweep` first, or give its results.json)")
        try:
            points += POINTS.validate_json(file.read_text())
        except ValidationError as exc:  # also what invalid JSON raises
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            reason = f"{where}: {first['msg']}" if where else first["msg"]
            raise UsageError(f"{file} is not a laws results file: {reason}") from exc
    return points
