"""Fitting the law to a sweep's points: every form for loss and for accuracy, the critical ratio,
a leave-one-ratio-out check of how well the law predicts a ratio it has not seen, and predictions.

The result, :class:`FitReport`, is what ``core laws fit`` writes as ``fit.json`` and what
``core laws predict`` and the ratio search read back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from prunekit.errors import UsageError
from prunekit.plugins.laws.law import LawFit, LawForm, critical_ratio, fit_law
from prunekit.plugins.laws.points import Point

METRICS = ("loss", "accuracy")
"""Test loss (cross-entropy, lower is better) and mean zero-shot accuracy (higher is better)."""


class Holdout(BaseModel):
    """Leave-one-ratio-out: each ratio's points predicted by the law fitted to the other ratios."""

    errors: dict[str, float]
    """Ratio → mean absolute relative error ``|predicted / measured − 1|`` of its points."""
    mean: float
    """Mean absolute relative error over every held-out point."""
    max: float


class Prediction(BaseModel):
    metric: str
    form: LawForm
    baseline: float
    value: float
    interval: tuple[float, float]
    """95% prediction interval of a new measurement."""


class FitReport(BaseModel):
    """Every fitted form per metric, with the points' provenance and the derived quantities."""

    sources: list[str]
    points: int
    ratios: list[float]
    recover_sizes: list[int]
    baselines: dict[str, dict[str, float | None]]
    """Model → its uncompressed scores L0 (``loss``, ``accuracy``), the default for predictions."""
    laws: dict[str, dict[LawForm, LawFit]]
    """Metric → form → fit."""
    unfitted: dict[str, dict[LawForm, str]]
    """Metric → form → why the points could not determine it."""
    retention: float
    """σ of the critical ratio."""
    critical_ratio: dict[LawForm, float]
    """``σ^(1/β) − 1`` from the accuracy β of each form that has one."""
    leave_one_ratio_out: dict[str, dict[LawForm, Holdout]]

    def law(self, metric: str, form: LawForm) -> LawFit:
        if metric in self.laws and form in self.laws[metric]:
            return self.laws[metric][form]
        reason = self.unfitted.get(metric, {}).get(form, f"the fit holds no {metric} measurements")
        raise UsageError(f"no {form.value} law for {metric}: {reason}")

    def baseline(self, metric: str, model: str | None) -> float:
        """L0 of ``model`` (or of the only model the fit saw) for ``metric``."""
        if model is None:
            if len(self.baselines) != 1:
                raise UsageError(
                    f"the fit covers several models ({', '.join(sorted(self.baselines))}): "
                    f"name one with --model or give the uncompressed score with --baseline-{metric}"
                )
            model = next(iter(self.baselines))
        if model not in self.baselines:
            raise UsageError(f"the fit has no model {model!r}; it has {', '.join(sorted(self.baselines))}")
        value = self.baselines[model].get(metric)
        if value is None:
            raise UsageError(f"the fit has no uncompressed {metric} for {model}")
        return value

    def predict(
        self,
        metric: str,
        ratio: float,
        recover_size: int | None = None,
        baseline: float | None = None,
        model: str | None = None,
    ) -> Prediction:
        """The full law when ``recover_size`` is given, else the law without D."""
        form = LawForm.WITHOUT_D if recover_size is None else LawForm.FULL
        law = self.law(metric, form)
        l0 = self.baseline(metric, model) if baseline is None else baseline
        return Prediction(
            metric=metric,
            form=form,
            baseline=l0,
            value=law.predict(l0, ratio, recover_size),
            interval=law.prediction_interval(l0, ratio, recover_size),
        )


def _columns(points: list[Point], metric: str) -> tuple[np.ndarray, ...]:
    usable = [p for p in points if getattr(p, metric) is not None and getattr(p, f"baseline_{metric}") is not None]
    return (
        np.array([getattr(p, f"baseline_{metric}") for p in usable], dtype=float),
        np.array([p.ratio for p in usable], dtype=float),
        np.array([p.recover_size for p in usable], dtype=float),
        np.array([getattr(p, metric) for p in usable], dtype=float),
    )


def leave_one_ratio_out(
    baseline: np.ndarray, ratio: np.ndarray, recover_size: np.ndarray, score: np.ndarray, form: LawForm
) -> Holdout:
    """Fit ``form`` without each ratio in turn and predict that ratio's points. Ratios whose
    remaining points cannot determine the form are left out of the errors."""
    errors: dict[str, float] = {}
    every: list[float] = []
    for held in np.unique(ratio):
        train = ratio != held
        try:
            law = fit_law(baseline[train], ratio[train], recover_size[train], score[train], form)
        except UsageError:
            continue
        predicted = np.array([
            law.predict(b, r, d) for b, r, d in zip(baseline[~train], ratio[~train], recover_size[~train])
        ])
        relative = np.abs(predicted / score[~train] - 1)
        errors[f"{held:g}"] = float(relative.mean())
        every += relative.tolist()
    if not every:
        raise UsageError(f"too few ratios to hold one out from the {form.value} law")
    return Holdout(errors=errors, mean=float(np.mean(every)), max=float(np.max(every)))


def fit_points(points: list[Point], sources: list[str], retention: float = 0.8) -> FitReport:
    """Fit every form of the law for loss and accuracy to ``points``."""
    if not points:
        raise UsageError("the results hold no points")
    laws: dict[str, dict[LawForm, LawFit]] = {}
    unfitted: dict[str, dict[LawForm, str]] = {}
    holdouts: dict[str, dict[LawForm, Holdout]] = {}
    for metric in METRICS:
        columns = _columns(points, metric)
        if not len(columns[0]):
            continue
        for form in LawForm:
            try:
                laws.setdefault(metric, {})[form] = fit_law(*columns[:3], columns[3], form)
            except UsageError as exc:
                unfitted.setdefault(metric, {})[form] = str(exc)
                continue
            if "beta" in form.terms:
                try:
                    holdouts.setdefault(metric, {})[form] = leave_one_ratio_out(*columns, form)
                except UsageError:
                    pass
    if not laws:
        raise UsageError("no point has both a compressed and an uncompressed score to fit")
    models = sorted({p.model for p in points})
    baselines = {
        model: {
            metric: float(np.mean(values)) if (values := [
                getattr(p, f"baseline_{metric}") for p in points
                if p.model == model and getattr(p, f"baseline_{metric}") is not None
            ]) else None
            for metric in METRICS
        }
        for model in models
    }
    return FitReport(
        sources=sources,
        points=len(points),
        ratios=sorted({p.ratio for p in points}),
        recover_sizes=sorted({p.recover_size for p in points}),
        baselines=baselines,
        laws=laws,
        unfitted=unfitted,
        retention=retention,
        critical_ratio={
            form: critical_ratio(law.coefficients["beta"], retention)
            for form, law in laws.get("accuracy", {}).items() if "beta" in law.coefficients
        },
        leave_one_ratio_out=holdouts,
    )


def read_fit(path: str | Path) -> FitReport:
    """The :class:`FitReport` in a ``fit.json`` that ``core laws fit`` wrote."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"fit file not found: {path} (write one with `core laws fit`)")
    try:
        return FitReport.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise UsageError(f"{path} is not a laws fit file: {exc.errors()[0]['msg']}") from exc
