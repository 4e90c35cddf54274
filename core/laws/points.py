"""Measured points of a sweep: one compressed model's loss and accuracy next to its baseline's.

A point comes from one run's ``report.json`` (the pipeline measures the uncompressed model as
``before`` and the compressed one as ``after``, with the same evaluators) and the recovery data
size the sweep gave it. Test loss is the cross-entropy on held-out text, ``log(perplexity)``;
accuracy is the mean over the zero-shot tasks of one lm-eval metric (``acc`` by default, the
metric the five tasks' group averages).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from prunekit.errors import UsageError

RESULTS_FILE = "results.json"


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


def task_scores(tasks: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    """``{task: value of metric}`` for the tasks that report ``metric``."""
    return {name: v for name, values in sorted(tasks.items()) if (v := _task_metric(values, metric)) is not None}


def _loss(metrics: dict[str, Any]) -> float | None:
    perplexity = metrics.get("perplexity")
    return None if perplexity is None else math.log(perplexity)


def point_from_report(report: dict[str, Any], recover_size: int, run: Path, metric: str = "acc") -> Point:
    """The point a finished run measured. Accuracy averages the tasks both stages measured, so the
    compressed model and its baseline are compared on the same tasks."""
    before, after = report["metrics"]["before"], report["metrics"]["after"]
    after_tasks, before_tasks = task_scores(after.get("tasks", {}), metric), task_scores(before.get("tasks", {}), metric)
    common = sorted(after_tasks.keys() & before_tasks.keys())
    return Point(
        model=report["model"],
        ratio=report["ratio"],
        recover_size=recover_size,
        loss=_loss(after),
        baseline_loss=_loss(before),
        accuracy=sum(after_tasks[t] for t in common) / len(common) if common else None,
        baseline_accuracy=sum(before_tasks[t] for t in common) / len(common) if common else None,
        tasks={t: after_tasks[t] for t in common},
        baseline_tasks={t: before_tasks[t] for t in common},
        run=str(run),
    )


POINTS = TypeAdapter(list[Point])


def write_points(points: list[Point], path: Path) -> None:
    from prunekit.output import write_text

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
