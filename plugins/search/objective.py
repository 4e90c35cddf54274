"""What a search maximises: one number from the retention of every quality task.

A compressed model keeps a fraction ``R_t`` of the uncompressed model's quality on each task t
(accuracy after / before, or loss before / after for a text's perplexity). Averaging the ``R_t``
lets one task collapse while the others hold the mean up. The α-fair utility of welfare economics
(Mo & Walrand; used for bandits by Chaudhary & Sinha, arXiv 2310.14164) trades the mean against the
worst task with one parameter:

    U_α(R) = Σ_t R_t^(1−α) / (1−α)        (α = 1: Σ_t log R_t)

α = 0 is the sum (the mean, up to the number of tasks), α = 1 the sum of logs, and α → ∞ ranks
configurations by their worst task. A search compares configurations through
:func:`equivalent_retention`, the retention that, given to every task, has the same utility: the
power mean of the ``R_t`` with exponent ``1 − α``. It ranks exactly as ``U_α`` does, and it reads
as a retention (the mean at α = 0, the geometric mean at α = 1, the minimum as α → ∞).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _values(retention: Iterable[float]) -> list[float]:
    values = [float(value) for value in retention]
    if not values:
        raise ValueError("no task retention to aggregate")
    if any(not value >= 0 for value in values):
        raise ValueError(f"retention must be non-negative, got {values}")
    return values


def alpha_fair_utility(retention: Iterable[float], alpha: float) -> float:
    """``U_α = Σ R^(1−α)/(1−α)``, and ``Σ log R`` at α = 1 (−inf where a task's retention is 0
    and α ≥ 1: a collapsed task is infinitely bad)."""
    values = _values(retention)
    if alpha == 1:
        return sum(math.log(value) if value > 0 else -math.inf for value in values)
    if alpha > 1 and any(value == 0 for value in values):
        return -math.inf
    return sum(value ** (1 - alpha) for value in values) / (1 - alpha)


def equivalent_retention(retention: Iterable[float], alpha: float) -> float:
    """The retention that, given to every task, has the utility of ``retention``: the power mean
    with exponent ``1 − α`` (arithmetic at α = 0, geometric at α = 1, the minimum as α → ∞)."""
    values = _values(retention)
    if any(value == 0 for value in values) and alpha >= 1:
        return 0.0
    if alpha == 1:
        return math.exp(sum(math.log(value) for value in values) / len(values))
    power = 1 - alpha
    low = min(values)
    if low == 0:  # only for α < 1 (see above), where a zero adds nothing to the sum of powers
        return (sum(value**power for value in values) / len(values)) ** (1 / power)
    # relative to the smallest value, so that a large α cannot overflow
    scaled = sum((value / low) ** power for value in values) / len(values)
    return low * scaled ** (1 / power)


class Objective(BaseModel):
    """How per-task retention becomes one score: ``mean`` or the α-fair ``equivalent_retention``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mean", "alpha-fair"] = "mean"
    alpha: float = Field(default=1.0, ge=0, description="α of the α-fair utility (ignored by mean).")

    @model_validator(mode="after")
    def _finite(self) -> Objective:
        if not math.isfinite(self.alpha):
            raise ValueError("alpha must be finite")
        return self

    def __call__(self, retention: dict[str, float]) -> float:
        """The score of a configuration whose tasks keep ``retention`` of the uncompressed quality."""
        values = list(retention.values())
        if self.kind == "mean":
            return sum(_values(values)) / len(values)
        return equivalent_retention(values, self.alpha)

    def describe(self) -> str:
        return "mean retention" if self.kind == "mean" else f"α-fair retention (α = {self.alpha:g})"
