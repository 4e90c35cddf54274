"""The payloads of a search's own hook, :func:`~prunekit.plugins.search.hookspecs.select_ratio`.

They travel like the core's (:mod:`prunekit.payloads`): one request in, one result out. A
selector plugin imports them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from prunekit.payloads import Dimension

if TYPE_CHECKING:
    from prunekit.config import RunConfig
    from prunekit.plugins.search.objective import Objective
    from prunekit.plugins.search.quality import Reference
    from prunekit.plugins.search.space import Space

__all__ = ["Candidate", "Trial", "SelectRequest", "Selection"]


@dataclass
class Candidate:
    """One compression configuration a search can try: a pruner and the fraction of each dimension
    it offers that it removes."""

    plugin: str
    ratios: dict[Dimension, float]

    @cached_property
    def key(self) -> str:
        """A stable name such as ``prunenet ffn=0.3``; equal configurations have equal keys."""
        order = list(Dimension)
        ratios = sorted(self.ratios.items(), key=lambda item: order.index(item[0]))
        return " ".join([self.plugin, *(f"{dim.value}={ratio:.4g}" for dim, ratio in ratios)])


@dataclass
class Trial:
    """One evaluation of a candidate: its latency and, where it met the budget, its quality on
    some of the search's evaluation batches."""

    candidate: Candidate
    feasible: bool
    """Whether the candidate met the latency budget (always ``True`` in a search without one)."""
    latency: float | None = None
    """Measured latency, in the unit of :attr:`SelectRequest.budget`."""
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per evaluation batch measured, the candidate's score on each quality task (mean token loss
    for ``perplexity``, the primary metric for a zero-shot task). Empty when the candidate missed
    the budget: its quality is not measured."""


@dataclass
class SelectRequest:
    """The state of a search, in :func:`~prunekit.plugins.search.hookspecs.select_ratio`."""

    candidates: list[Candidate]
    history: list[Trial]
    """Every finished evaluation, in order (several per candidate where a selector pulls it again)."""
    config: RunConfig
    objective: Objective
    """Turns per-task retention into the one score to maximise."""
    reference: Reference
    """The uncompressed model's score on every evaluation batch; retention is measured against it."""
    batches: int
    """Evaluation batches that make one full evaluation (batch indices ``0 .. batches - 1``)."""
    budget: float | None
    """The latency limit (a fraction of the uncompressed model's latency, or milliseconds for an
    absolute budget); ``None`` searches the quality/latency Pareto front instead."""
    latency: dict[str, float] = field(default_factory=dict)
    """Measured latency per candidate key, in the unit of ``budget``, for every candidate whose
    shape has been timed (candidates of equal shape share it)."""
    evaluations_left: int | None = None
    """Evaluation batches the search may still spend (``None``: no limit)."""
    pending: list[Candidate] = field(default_factory=list)
    """Candidates other workers of a shared study are evaluating right now."""
    seed: int = 0
    space: Space | None = None
    """The structure of the candidates: the axis of ratios per dimension, which candidates share a
    shape (and so a latency), and which is at least as compressed as which."""

    def options(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings from the run config (``options: {plugin: {...}}``)."""
        return dict(self.config.options.get(plugin, {}))

    @cached_property
    def _measured(self) -> dict[str, dict[int, dict[str, float]]]:
        merged: dict[str, dict[int, dict[str, float]]] = {}
        for trial in self.history:
            merged.setdefault(trial.candidate.key, {}).update(trial.scores)
        return merged

    def measured(self, candidate: Candidate) -> dict[int, dict[str, float]]:
        """Every batch measured for ``candidate`` so far, over all its trials."""
        return dict(self._measured.get(candidate.key, {}))

    def quality(self, candidate: Candidate) -> float | None:
        """The objective of ``candidate`` estimated from its measured batches (``None``: none yet)."""
        measured = self.measured(candidate)
        return self.objective(self.reference.retention(measured)) if measured else None

    def feasible(self, candidate: Candidate) -> bool | None:
        """Whether the candidate's measured latency meets the budget (``None``: not timed yet)."""
        latency = self.latency.get(candidate.key)
        if latency is None:
            return None
        return self.budget is None or latency <= self.budget


@dataclass
class Selection:
    """A selector's answer: what to evaluate next, and the best candidate so far."""

    next: Candidate | None
    """The candidate to evaluate next; ``None`` ends the search."""
    best: Candidate | None = None
    """The best feasible candidate so far (``None`` in a Pareto search, or before any is known)."""
    batches: list[int] | None = None
    """The evaluation batches to measure ``next`` on; ``None`` means all of them (a full evaluation)."""
    note: str = ""
    """Why the selector stopped (or what it is doing), for the search report."""
