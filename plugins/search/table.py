"""A search's measurements recorded once, replayed by any number of searches.

A :class:`Table` holds, for every configuration of a space, its score on every evaluation batch,
the latency of every shape, and the uncompressed model's reference scores: everything a search
could measure. :class:`TableEvaluator` answers a search from it instead of from a model, so that
selectors can be compared over many seeds at no cost (``bench/search_efficiency.py``), and the
grid's answer (:meth:`Table.best`) is known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prunekit.config import RunConfig
from prunekit.payloads import Dimension
from prunekit.plugins.search.budget import LatencyBudget, Timing
from prunekit.plugins.search.driver import Outcome, SearchLoop
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.payloads import Candidate
from prunekit.plugins.search.quality import LOSS_TASK, Reference
from prunekit.plugins.search.space import Axis, Space
from prunekit.plugins.search.study import SearchStudy

if TYPE_CHECKING:
    from prunekit.manager import Plugins


class Table(BaseModel):
    """Every measurement of an exhaustive search."""

    model: str
    pruners: dict[str, list[str]]
    """The dimensions each pruner offers."""
    axes: dict[str, dict[str, Any]]
    """Per dimension, ``units`` and the ``ratios`` of its axis."""
    batches: int
    reference: dict[str, dict[str, float]]
    """Batch index → the uncompressed model's score per task."""
    timings: dict[str, dict[str, float]]
    """Shape → ``milliseconds`` and ``reference_milliseconds``."""
    scores: dict[str, dict[str, dict[str, float]]]
    """Configuration key → batch index → score per task."""
    notes: dict[str, Any] = {}
    """How it was recorded: settings, machine, load, duration."""

    def space(self) -> Space:
        axes = {
            Dimension(dim): Axis(Dimension(dim), int(axis["units"]), tuple(float(r) for r in axis["ratios"]))
            for dim, axis in self.axes.items()
        }
        return Space({p: tuple(Dimension(d) for d in dims) for p, dims in self.pruners.items()}, axes)

    def reference_scores(self) -> Reference:
        batches = {int(k): v for k, v in self.reference.items()}
        return Reference(batches, frozenset({LOSS_TASK}) & set(next(iter(batches.values()))))

    def timing(self, space: Space, candidate: Candidate) -> Timing:
        recorded = self.timings[space.structure(candidate)]
        return Timing.single(recorded["milliseconds"], recorded["reference_milliseconds"])

    def quality(self, candidate: Candidate, objective: Objective) -> float:
        """The configuration's full-evaluation objective (every batch)."""
        measured = {int(k): v for k, v in self.scores[candidate.key].items()}
        return objective(self.reference_scores().retention(measured))

    def feasible(self, space: Space, budget: float | None) -> list[Candidate]:
        """The configurations whose latency relative to the uncompressed model is within ``budget``."""
        return [c for c in space.candidates() if budget is None or self.timing(space, c).relative <= budget]

    def best(self, objective: Objective, budget: float | None) -> Candidate | None:
        """The grid's answer: the feasible configuration with the best full-evaluation objective."""
        space = self.space()
        return max(self.feasible(space, budget), key=lambda c: self.quality(c, objective), default=None)


class _Recorded:
    def __init__(self, table: Table, space: Space, candidate: Candidate) -> None:
        self._table, self._space, self._candidate = table, space, candidate

    def time(self) -> Timing:
        return self._table.timing(self._space, self._candidate)

    def scores(self, batch: int) -> dict[str, float]:
        return dict(self._table.scores[self._candidate.key][str(batch)])


class TableEvaluator:
    """The search loop's :class:`~prunekit.plugins.search.driver.Evaluator`, answered from a table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.space = table.space()

    def reference(self, batches: Sequence[int]) -> dict[int, dict[str, float]]:
        return {batch: dict(self.table.reference[str(batch)]) for batch in batches}

    def prepare(self, candidate: Candidate) -> _Recorded:
        return _Recorded(self.table, self.space, candidate)


def replay(
    table: Table,
    plugins: Plugins,
    selector: str,
    *,
    objective: Objective,
    budget: float | None,
    seed: int = 0,
    max_evaluations: float | None = None,
    options: dict[str, Any] | None = None,
    storage: str | None = None,
    study: str | None = None,
) -> Outcome:
    """Run the search loop with ``selector`` against ``table``; ``budget`` is a fraction of the uncompressed
    model's latency (``None``: a Pareto search). The study is kept in memory, or in the Optuna ``storage`` under
    the name ``study``, where several processes replaying the same table share it as a search's workers do."""
    config = plugins.resolve_options(
        RunConfig(model=table.model, plugins=[selector], seed=seed, options={selector: options or {}})
    )
    directions = ["maximize"] if budget is not None else ["maximize", "minimize"]
    loop = SearchLoop(
        config=config,
        evaluator=TableEvaluator(table),
        hooks=plugins.hooks([selector]),
        study=SearchStudy(storage, study or f"replay-{selector}-{seed}", directions),
        budget=None if budget is None else LatencyBudget(fraction=budget),
        objective=objective,
        batches=table.batches,
        max_evaluations=max_evaluations,
    )
    return loop.run()
