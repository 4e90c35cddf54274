"""The compression law and its fit: ``L = L0^α · (1 + r)^β · (1 + 1/(D + 1))^γ``.

L is a compressed model's score (test loss or zero-shot accuracy), L0 the uncompressed model's,
r the compression ratio and D the recovery data size (arXiv 2504.04342). Taking logs makes the law
linear in its exponents, ``log L = α log L0 + β log(1 + r) + γ log(1 + 1/(D + 1))``, and the paper
fits it by ordinary least squares in log space *without an intercept*; so does :func:`fit_law`.
The two reduced forms drop the D term or the r term.

This module is pure numpy so that anything may use a fitted law as a prior (the ratio search's
bandit does) without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import numpy as np
from pydantic import BaseModel

from prunekit.errors import UsageError


class LawForm(str, Enum):
    """Which terms of the law a fit uses."""

    FULL = "full"
    """``L0^α (1 + r)^β (1 + 1/(D + 1))^γ``"""
    WITHOUT_D = "without_d"
    """``L0^α (1 + r)^β``: recovery not modelled."""
    WITHOUT_R = "without_r"
    """``L0^α (1 + 1/(D + 1))^γ``: the ratio not modelled."""

    @property
    def terms(self) -> tuple[str, ...]:
        return {
            LawForm.FULL: ("alpha", "beta", "gamma"),
            LawForm.WITHOUT_D: ("alpha", "beta"),
            LawForm.WITHOUT_R: ("alpha", "gamma"),
        }[self]


def regressors(
    baseline: Sequence[float] | np.ndarray,
    ratio: Sequence[float] | np.ndarray,
    recover_size: Sequence[float] | np.ndarray | None,
    form: LawForm,
) -> np.ndarray:
    """The design matrix: one row per point, one log-space column per term of ``form``."""
    baseline = np.asarray(baseline, dtype=float)
    columns = {"alpha": np.log(baseline), "beta": np.log1p(np.asarray(ratio, dtype=float))}
    if "gamma" in form.terms:
        if recover_size is None:
            raise UsageError(f"the {form.value} law needs the recovery data size D (--recover-size)")
        size = np.asarray(recover_size, dtype=float)
        columns["gamma"] = np.log1p(1.0 / (size + 1.0))
    return np.column_stack([np.broadcast_to(columns[t], baseline.shape) for t in form.terms])


class LawFit(BaseModel):
    """One fitted form of the law for one metric, with what a reader needs to judge it."""

    form: LawForm
    coefficients: dict[str, float]
    """α, β, γ (whichever the form has) by name: ``alpha``, ``beta``, ``gamma``."""
    standard_errors: dict[str, float]
    covariance: list[list[float]]
    """Covariance of the coefficients, in the order of ``form.terms``."""
    residual_variance: float
    """Unbiased variance of the log-space residuals (RSS / (n − p))."""
    points: int
    r2: float
    """Uncentered R² (``1 − RSS / Σ log² L``), the one a regression through the origin reports
    and the paper quotes. With one model, log L0 is a constant column and dominates it."""
    adj_r2: float
    """Uncentered R² adjusted for the number of terms: ``1 − (1 − R²) · n / (n − p)``."""
    adj_r2_centered: float | None
    """R² about the mean of log L, adjusted (``(n − 1) / (n − p)``): how much of the variation
    *between* points the law explains. ``None`` when every point has the same score."""

    def _log_mean(self, baseline: float, ratio: float, recover_size: float | None) -> tuple[float, np.ndarray]:
        if not baseline > 0:
            raise UsageError(f"the uncompressed score L0 must be positive to use the law, got {baseline:g}")
        if not 0 <= ratio < 1:
            raise UsageError(f"ratio must be in [0, 1), got {ratio:g}")
        if recover_size is not None and recover_size < 0:
            raise UsageError(f"recovery data size must be >= 0, got {recover_size:g}")
        x = regressors([baseline], [ratio], None if recover_size is None else [recover_size], self.form)[0]
        coefficients = np.array([self.coefficients[t] for t in self.form.terms])
        return float(x @ coefficients), x

    def predict(self, baseline: float, ratio: float, recover_size: float | None = None) -> float:
        """The predicted score at ``ratio`` (and ``recover_size`` for forms with D), given L0.

        This is ``exp`` of the predicted log score, i.e. the median of a log-normal error model."""
        return math.exp(self._log_mean(baseline, ratio, recover_size)[0])

    def prediction_interval(
        self, baseline: float, ratio: float, recover_size: float | None = None, level: float = 0.95
    ) -> tuple[float, float]:
        """Where a new measurement is expected to fall with probability ``level``: the t interval
        of a new observation in log space (coefficient uncertainty plus residual noise)."""
        from scipy import stats

        mean, x = self._log_mean(baseline, ratio, recover_size)
        variance = float(x @ np.array(self.covariance) @ x) + self.residual_variance
        half = stats.t.ppf(0.5 + level / 2, self.points - len(self.form.terms)) * math.sqrt(variance)
        return math.exp(mean - half), math.exp(mean + half)


def fit_law(
    baseline: Sequence[float] | np.ndarray,
    ratio: Sequence[float] | np.ndarray,
    recover_size: Sequence[float] | np.ndarray | None,
    score: Sequence[float] | np.ndarray,
    form: LawForm = LawForm.FULL,
) -> LawFit:
    """Fit ``form`` to measured points by least squares on ``log score``, without an intercept.

    Raises :class:`UsageError` when the points cannot determine the form's exponents: a score or
    L0 that is not positive, fewer points than terms plus one, or collinear terms (one model swept
    at a single D leaves γ indistinguishable from α, say)."""
    score = np.asarray(score, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    if score.shape != baseline.shape or score.ndim != 1:
        raise ValueError("baseline and score must be 1-D and of equal length")
    if np.any(~(score > 0)) or np.any(~(baseline > 0)):
        raise UsageError("the law is fitted in log space: every score and L0 must be positive")
    x = regressors(baseline, ratio, recover_size, form)
    n, p = x.shape
    if n <= p:
        raise UsageError(f"the {form.value} law has {p} exponents and needs more than {p} points, got {n}")
    if np.linalg.matrix_rank(x) < p:
        raise UsageError(
            f"the points cannot separate the exponents of the {form.value} law "
            f"({', '.join(form.terms)}): sweep more than one value of each varied term"
        )
    y = np.log(score)
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = y - x @ coefficients
    rss = float(residuals @ residuals)
    variance = rss / (n - p)
    covariance = variance * np.linalg.inv(x.T @ x)
    r2 = 1 - rss / float(y @ y)
    centered = float(((y - y.mean()) ** 2).sum())
    return LawFit(
        form=form,
        coefficients=dict(zip(form.terms, coefficients.tolist())),
        standard_errors=dict(zip(form.terms, np.sqrt(np.diag(covariance)).tolist())),
        covariance=covariance.tolist(),
        residual_variance=variance,
        points=n,
        r2=r2,
        adj_r2=1 - (1 - r2) * n / (n - p),
        adj_r2_centered=1 - (rss / centered) * (n - 1) / (n - p) if centered > 0 else None,
    )


def critical_ratio(beta: float, retention: float) -> float:
    """The paper's critical ratio ``r* = σ^(1/β) − 1``: the ratio at which ``(1 + r)^β`` reaches
    ``σ``, i.e. beyond which a fraction σ of accuracy (β < 0) cannot be kept, or loss (β > 0)
    grows past σ times. Negative when σ is already out of reach at r = 0."""
    if not retention > 0:
        raise UsageError(f"retention σ must be positive, got {retention:g}")
    if beta == 0:
        raise UsageError("β = 0: the score does not depend on the ratio, so there is no critical ratio")
    return retention ** (1 / beta) - 1
