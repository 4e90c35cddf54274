"""Retention measured on evaluation batches, against the uncompressed model on the same batches.

A search measures quality on ``K`` evaluation batches: batch ``k`` is a seeded random sample of
each task's examples (and of the perplexity text's windows), the same sample for every candidate.
A *full evaluation* is all ``K`` batches; a bandit's cheap *pull* is one batch. The uncompressed
model is scored once on every batch (the :class:`Reference`).

A candidate measured on some batches ``B`` gets, per task, the control-variate estimate of its
full-evaluation score

    Ĉ_t = D_t + mean_{k∈B} (c_t(k) − d_t(k))

where ``c_t(k)`` and ``d_t(k)`` are the candidate's and the uncompressed model's scores on batch k
and ``D_t`` the uncompressed model's full score. Only the paired difference is sampled, which
varies far less between batches than either score does (a hard batch is hard for both models),
and at ``B`` = all batches ``Ĉ_t`` is exactly the candidate's full score. Retention is then
``Ĉ_t / D_t`` for accuracies and ``D_t / Ĉ_t`` for a loss (lower is better).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prunekit.errors import UsageError

Scores = Mapping[int, Mapping[str, float]]
"""Per evaluation batch, the score of each quality task."""

LOSS_TASK = "loss"
"""The quality task of the perplexity evaluator's text: the mean token loss (lower is better)."""

FLOOR = 1e-6
"""A candidate's estimated score is kept above zero, so that retention stays defined."""


def merge(parts: Iterable[Scores]) -> dict[int, dict[str, float]]:
    """The batches of several measurements of one candidate, as one mapping (later ones win)."""
    merged: dict[int, dict[str, float]] = {}
    for part in parts:
        for batch, scores in part.items():
            merged[int(batch)] = dict(scores)
    return merged


@dataclass
class Reference:
    """The uncompressed model's score on every evaluation batch."""

    batches: dict[int, dict[str, float]]
    lower_is_better: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.batches = {int(k): dict(v) for k, v in self.batches.items()}
        if not self.batches:
            raise ValueError("the reference needs at least one evaluation batch")
        tasks = sorted(next(iter(self.batches.values())))
        self._full = {task: statistics.fmean(scores[task] for scores in self.batches.values()) for task in tasks}
        for task, score in self._full.items():
            if not score > 0:
                raise UsageError(
                    f"the uncompressed model scores {score:g} on {task}: retention against it is "
                    f"undefined; leave the task out of the search"
                )

    @property
    def tasks(self) -> list[str]:
        return list(self._full)

    def full(self) -> dict[str, float]:
        """The uncompressed model's full-evaluation score per task (the mean over batches)."""
        return dict(self._full)

    def estimate(self, measured: Scores) -> dict[str, float]:
        """The candidate's full-evaluation score per task, from the batches in ``measured``."""
        if not measured:
            raise ValueError("no batch measured")
        full = self.full()
        estimate = {}
        for task in self.tasks:
            shift = statistics.fmean(measured[k][task] - self.batches[int(k)][task] for k in measured)
            estimate[task] = max(FLOOR, full[task] + shift)
        return estimate

    def retention(self, measured: Scores) -> dict[str, float]:
        """Per task, the fraction of the uncompressed model's quality the candidate keeps."""
        full = self.full()
        return {
            task: full[task] / score if task in self.lower_is_better else score / full[task]
            for task, score in self.estimate(measured).items()
        }

    def batch_retention(self, measured: Scores) -> dict[int, dict[str, float]]:
        """The retention each batch alone estimates (for the spread between batches)."""
        return {int(k): self.retention({k: scores}) for k, scores in measured.items()}
