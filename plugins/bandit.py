"""``bandit``: find the best configuration that meets the latency budget with few evaluations.

Arms are the candidate configurations; a *pull* scores one arm on one evaluation batch (a seeded
random sample of each task's examples), a cheap and noisy estimate of its full evaluation. Every
arm's j-th pull uses the same batch (common random numbers), and the search measures each batch
as a paired difference from the uncompressed model (:mod:`prunekit.plugins.search.quality`), so arms are
compared on equal terms.

A step does one of three things, in this order:

1. **Feasibility.** Latency is monotone in the shape: a shape that keeps no more units than a
   feasible one is presumed feasible, one that keeps no fewer than an infeasible one presumed
   infeasible. While some arm's feasibility is open, the bandit times the shape that settles the
   most open shapes whichever way it comes out (a bisection over the lattice of shapes).
2. **Exploration.** Each pruner's arms share one compression law (arXiv 2504.04342):
   ``log Q = c + Σ_d β_d · log(1 + r_d)``, fitted by weighted least squares to the arms pulled so
   far (two more than the law has terms, so that its misfit is measured). It predicts, with a
   prediction interval no narrower than one batch's noise, the quality of every arm not pulled
   yet. Until a pruner has enough pulled arms to fit it, the bandit pulls the arm farthest (in
   ``log(1 + r)``) from those pulled, starting with the least compressed one.
3. **Best-arm identification (LUCB).** Each arm's quality is its own batches' estimate, combined
   with the law's prediction from the other arms (precision-weighted); its confidence interval
   shrinks with the finite-population factor ``(K − n)/(K − 1)`` and is exact once all ``K``
   batches are in. Let ``h`` be the arm with the best estimate and ``l`` the other arm with the
   highest upper bound: if ``h``'s lower bound (plus the tolerance) reaches ``l``'s upper bound, and
   ``h`` was measured and timed, ``h`` is the answer; otherwise pull whichever of the two is less
   certain.

The search ends there, or when the evaluation budget is spent (the best arm so far is the answer).
Without a latency budget the bandit does not answer, and a Pareto selector (``optuna``) does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl
from prunekit.plugins.search.payloads import Candidate, SelectRequest, Selection

if TYPE_CHECKING:
    import numpy as np

NAME = "bandit"
PRIOR_DEGREES = 2.0
"""Weight, in pulls, of the ``noise`` setting against the spread measured between batches."""


class BanditOptions(BaseModel):
    """Settings of ``bandit`` under ``options: {bandit: {...}}``."""

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Probability that the arm returned is the best feasible one."
    )
    tolerance: float = Field(
        default=0.0, ge=0, description="Stop once no other arm can beat the best by more than this (objective units)."
    )
    noise: float = Field(
        default=0.02, gt=0, description="Spread of one batch's objective assumed until the batches measure it."
    )
    law: bool = Field(default=True, description="Predict unpulled arms from the pulled ones through the compression law.")


@dataclass
class Estimate:
    mean: float
    sd: float
    pulls: int


class Bandit:
    """One decision of the bandit, from the state of the search."""

    def __init__(self, request: SelectRequest, options: BanditOptions) -> None:
        import numpy as np

        if request.space is None:
            raise ValueError("the bandit needs the search space in the request")
        self.request = request
        self.options = options
        self.space = request.space
        self.arms = {arm.key: arm for arm in request.candidates}
        self.measured = {key: request.measured(arm) for key, arm in self.arms.items()}
        self.pending = {arm.key for arm in request.pending}
        self.order = [int(b) for b in np.random.default_rng(request.seed).permutation(request.batches)]

    # --- feasibility ----------------------------------------------------------------------------

    def status(self, arm: Candidate) -> bool | None:
        """Measured feasibility, else what monotone latency implies, else ``None``."""
        measured = self.request.feasible(arm)
        if measured is not None:
            return measured
        for other in self.arms.values():
            verdict = self.request.feasible(other)
            if verdict is False and self.space.at_least_as_compressed(other, arm):
                return False
            if verdict is True and self.space.at_least_as_compressed(arm, other):
                return True
        return None

    def probe(self, open_arms: list[Candidate]) -> Candidate:
        """The open arm whose timing settles the most open shapes, whichever way it turns out."""
        shapes = {self.space.structure(arm): arm for arm in open_arms}

        def settled(arm: Candidate) -> int:
            faster = sum(self.space.at_least_as_compressed(o, arm) for o in shapes.values())
            slower = sum(self.space.at_least_as_compressed(arm, o) for o in shapes.values())
            return min(faster, slower)

        return max(shapes.values(), key=lambda arm: (settled(arm), -self._compression(arm)))

    # --- estimates ------------------------------------------------------------------------------

    def _compression(self, arm: Candidate) -> float:
        return sum(math.log1p(r) for r in arm.ratios.values())

    def _features(self, arm: Candidate) -> np.ndarray:
        import numpy as np

        dims = self.space.pruners[arm.plugin]
        return np.array([1.0, *(math.log1p(arm.ratios[d]) for d in dims)])

    def _batch_values(self, key: str) -> list[float]:
        reference, objective = self.request.reference, self.request.objective
        return [objective(r) for r in reference.batch_retention(self.measured[key]).values()]

    def noise(self) -> float:
        """The spread of one batch's objective around its arm's, pooled over arms, with the prior."""
        squares, degrees = 0.0, 0
        for key, scores in self.measured.items():
            if len(scores) >= 2:
                values = self._batch_values(key)
                mean = sum(values) / len(values)
                squares += sum((v - mean) ** 2 for v in values)
                degrees += len(values) - 1
        prior = PRIOR_DEGREES * self.options.noise**2
        return math.sqrt((prior + squares) / (PRIOR_DEGREES + degrees))

    def observed(self, key: str, sigma: float) -> Estimate | None:
        scores = self.measured[key]
        if not scores:
            return None
        pulls, batches = len(scores), self.request.batches
        mean = self.request.objective(self.request.reference.retention(scores))
        shrink = (batches - pulls) / (batches - 1) if batches > 1 else 0.0
        return Estimate(mean, sigma * math.sqrt(max(shrink, 0.0) / pulls), pulls)

    def law(self, arm: Candidate, observed: dict[str, Estimate], live: set[str], sigma: float) -> Estimate | None:
        """The compression law of ``arm``'s pruner, fitted to its other pulled live arms, at ``arm``.

        Needs two more arms than the law has terms (so that its misfit is measured), and trusts a
        pull no more than the batches' own spread ``sigma`` allows."""
        import numpy as np

        points = [
            (self._features(self.arms[key]), math.log(max(est.mean, 1e-9)), est.pulls)
            for key, est in observed.items()
            if key != arm.key and key in live and self.arms[key].plugin == arm.plugin
        ]
        terms = 1 + len(self.space.pruners[arm.plugin])
        if len(points) < terms + 2:
            return None
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        w = np.array([p[2] for p in points], dtype=float)
        gram = x.T @ (x * w[:, None])
        if np.linalg.matrix_rank(gram) < terms:
            return None
        inverse = np.linalg.inv(gram)
        beta = inverse @ (x.T @ (w * y))
        residual = y - x @ beta
        unit = float(w @ residual**2) / (len(points) - terms)  # variance of one pull around the law
        unit = max(unit, (sigma / math.exp(float(y.mean()))) ** 2)  # never below one batch's noise
        features = self._features(arm)
        log_mean = float(features @ beta)
        log_var = unit * (1.0 + float(features @ inverse @ features))
        mean = math.exp(log_mean)
        return Estimate(mean, mean * math.sqrt(max(log_var, 1e-12)), 0)

    def estimates(self, live: list[Candidate]) -> dict[str, Estimate | None]:
        sigma = self.noise()
        keys = {arm.key for arm in live}
        observed = {arm.key: est for arm in live if (est := self.observed(arm.key, sigma)) is not None}
        found: dict[str, Estimate | None] = {}
        for arm in live:
            own = observed.get(arm.key)
            prior = self.law(arm, observed, keys, sigma) if self.options.law else None
            if own is not None and own.pulls >= self.request.batches:
                found[arm.key] = own  # every batch measured: the full evaluation itself
            elif own is None or prior is None:
                found[arm.key] = own or prior
            else:
                weights = (1 / max(own.sd, 1e-12) ** 2, 1 / max(prior.sd, 1e-12) ** 2)
                mean = (weights[0] * own.mean + weights[1] * prior.mean) / sum(weights)
                found[arm.key] = Estimate(mean, 1 / math.sqrt(sum(weights)), own.pulls)
        return found

    # --- decisions ------------------------------------------------------------------------------

    def pull(self, arm: Candidate, note: str, best: Candidate | None) -> Selection:
        done = self.measured[arm.key]
        batch = next(b for b in self.order if b not in done)
        return Selection(next=arm, best=best, batches=[batch], note=note)

    def explore(self, unknown: list[Candidate], live: list[Candidate]) -> Candidate:
        """The unknown arm farthest from the pulled arms of its pruner (the least compressed first),
        from the pruner with the fewest pulled arms."""
        import numpy as np

        pulled = [arm for arm in live if self.measured[arm.key]]

        def priority(arm: Candidate) -> tuple:
            same = [self._features(o)[1:] for o in pulled if o.plugin == arm.plugin]
            distance = min((float(np.abs(self._features(arm)[1:] - f).sum()) for f in same), default=math.inf)
            least = -self._compression(arm) if not same else 0.0
            return (-len(same), distance, least, arm.key not in self.pending)

        return max(unknown, key=priority)

    def select(self) -> Selection:
        from scipy import stats

        arms = list(self.arms.values())
        status = {arm.key: self.status(arm) for arm in arms}
        live = [arm for arm in arms if status[arm.key] is not False]
        if not live:
            return Selection(next=None, best=None, note="no configuration meets the latency budget")
        open_arms = [arm for arm in live if status[arm.key] is None]
        if open_arms:
            return self.pull(self.probe(open_arms), "timing shapes to find which meet the budget", None)

        estimates = self.estimates(live)
        known = [arm for arm in live if estimates[arm.key] is not None]
        best = max(
            (arm for arm in known if self.measured[arm.key] and self.request.feasible(arm)),
            key=lambda arm: estimates[arm.key].mean,
            default=None,
        )
        left = self.request.evaluations_left
        if left is not None and left <= 0:
            return Selection(next=None, best=best, note="the evaluation budget is spent")
        unknown = [arm for arm in live if estimates[arm.key] is None]
        if unknown:
            return self.pull(self.explore(unknown, live), "exploring arms the law cannot predict yet", best)

        z = stats.norm.ppf(1 - (1 - self.options.confidence) / (2 * len(live)))
        top = max(live, key=lambda arm: estimates[arm.key].mean)
        head = estimates[top.key]
        others = [arm for arm in live if arm.key != top.key]
        if not others:
            challenger, bound = None, -math.inf
        else:
            challenger = max(others, key=lambda arm: estimates[arm.key].mean + z * estimates[arm.key].sd)
            bound = estimates[challenger.key].mean + z * estimates[challenger.key].sd
        if head.mean - z * head.sd + self.options.tolerance >= bound:
            if self.measured[top.key] and self.request.feasible(top):
                note = (
                    f"best arm identified: its lower bound {head.mean - z * head.sd:.4f} reaches every other "
                    f"arm's upper bound ({bound:.4f}) at confidence {self.options.confidence:g}"
                )
                return Selection(next=None, best=top, note=note)
            return self.pull(top, "confirming the predicted best arm", best)
        pair = [top, challenger]
        uncertain = [arm for arm in pair if estimates[arm.key].sd > 0 and arm.key not in self.pending] or [
            arm for arm in pair if estimates[arm.key].sd > 0
        ]
        target = max(uncertain, key=lambda arm: estimates[arm.key].sd)
        return self.pull(target, "separating the best arm from its closest challenger", best)


@hookimpl
def plugin_options() -> type[BaseModel]:
    return BanditOptions


@hookimpl(tryfirst=True, optionalhook=True)  # the search plugin's hook, absent where it is disabled
def select_ratio(request: SelectRequest) -> Selection | None:
    if request.budget is None:
        return None  # no single best without a budget: a Pareto selector answers instead
    return Bandit(request, BanditOptions.model_validate(request.options(NAME))).select()
