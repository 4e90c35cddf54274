"""Zero-shot accuracy above chance, with its noise: the one home of the formulas every report uses.

Two facts make raw accuracies and their ratios mislead. A multiple-choice task scores ``chance`` (the mean over
its scored examples of 1 / number of choices) by guessing, so a model that keeps 0.27 of 0.30 on a 4-choice task
keeps 40% of what it knew above guessing, not 90%. And an accuracy over N examples has a standard error of about
sqrt(p(1 − p) / N): a difference smaller than its standard error says nothing. So the reports give every accuracy
± its standard error, and the retention above chance ± its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel


class AboveChance(BaseModel):
    """``(after − chance) / (before − chance)``: the share of the uncompressed model's accuracy above chance that
    the compressed one keeps, with its standard error; both ``None``, and ``reason`` said, where it means nothing."""

    retention: float | None
    stderr: float | None
    """``None`` where either accuracy came without a standard error."""
    reason: str | None = None
    """Why ``retention`` is ``None``: the uncompressed model is not above chance by more than its standard error, so
    the ratio divides by noise."""


def average_stderr(stderrs: Sequence[float]) -> float:
    """The standard error of the mean of ``k`` independent measurements: ``sqrt(Σ se_i²) / k`` (the tasks of a
    zero-shot average are scored on different examples)."""
    return math.sqrt(sum(error**2 for error in stderrs)) / len(stderrs)


def above_chance_retention(after: float, after_stderr: float | None, before: float, before_stderr: float | None,
                           chance: float) -> AboveChance:
    """Above-chance retention ``R = (after − chance) / (before − chance)`` and its standard error by the delta
    method, the two accuracies measured independently (different models; chance is exact):
    ``se_R = sqrt(se_after² + R² · se_before²) / |before − chance|``.

    Where ``before − chance`` is not above ``before``'s standard error (0 when unknown), the ratio divides by noise
    and could be any size: the result is ``None`` with the reason instead."""
    margin = before - chance
    noise = before_stderr or 0.0
    if margin <= noise:
        within = f"within one standard error ({noise:.2g}) of" if margin > 0 else "not above"
        return AboveChance(retention=None, stderr=None,
                           reason=f"the uncompressed model's {before:.4g} is {within} chance ({chance:.4g})")
    kept = (after - chance) / margin
    if after_stderr is None or before_stderr is None:
        return AboveChance(retention=kept, stderr=None)
    return AboveChance(retention=kept, stderr=math.sqrt(after_stderr**2 + kept**2 * before_stderr**2) / margin)
