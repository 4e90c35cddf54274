"""``optuna``: Optuna's samplers over the search space, one full evaluation per configuration.

Every step rebuilds an in-memory Optuna study from the search's history, one trial per evaluated
configuration with the same parameters as the search's own study (pruner, then the axis position
of each ratio), and asks the chosen sampler for the next one:

- ``tpe`` (default): the Tree-structured Parzen Estimator, multivariate and grouped so that it
  models the conditional space (each pruner has its own dimensions). Under a latency budget the
  budget is the trial's constraint (``constraints`` / ``trial.set_constraint``, Optuna 5) and TPE
  learns to avoid infeasible regions; without one the study has two objectives, quality and
  latency, and the search's answer is the Pareto front.
- ``random``: uniform random search, the baseline TPE must beat.
- ``grid``: Optuna's ``BruteForceSampler``, every configuration once in random order.

A configuration already evaluated is never evaluated again: when the sampler proposes one (TPE
may, on a finite space), the proposal is told its known result and the sampler asked again; after
a few repeats the next configuration is drawn uniformly from those not yet evaluated. The search
ends when every configuration has been evaluated, or when the evaluation budget is spent.
"""

from __future__ import annotations

import random
import warnings
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl
from prunekit.plugins.search.payloads import Candidate, SelectRequest, Selection

if TYPE_CHECKING:  # Optuna is imported when a search selects, not whenever plugins are loaded
    import optuna

NAME = "optuna"
REPEATS = 10
"""Proposals of already evaluated configurations tolerated before drawing an untried one."""


class OptunaOptions(BaseModel):
    """Settings of ``optuna`` under ``options: {optuna: {...}}``."""

    model_config = ConfigDict(extra="forbid")

    sampler: Literal["tpe", "random", "grid"] = Field(default="tpe", description="Optuna sampler: tpe, random or grid.")
    startup_trials: int = Field(default=5, ge=1, description="TPE's random trials before it models the results.")


def _sampler(options: OptunaOptions, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # BruteForceSampler and TPE's multivariate and group are experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if options.sampler == "grid":
            return optuna.samplers.BruteForceSampler(seed=seed)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=options.startup_trials, multivariate=True, group=True, constant_liar=True
        )


def _done(request: SelectRequest, candidate: Candidate) -> bool:
    """Evaluated in full, or known to miss the budget."""
    return request.feasible(candidate) is False or len(request.measured(candidate)) >= request.batches


def _values(request: SelectRequest, candidate: Candidate) -> list[float]:
    quality = request.quality(candidate) or 0.0
    return [quality] if request.budget is not None else [quality, request.latency[candidate.key]]


def _known_trial(request: SelectRequest, candidate: Candidate) -> optuna.trial.FrozenTrial:
    import optuna

    from prunekit.plugins.search.study import distributions, params

    constraints = None
    if request.budget is not None:
        constraints = {"latency": request.latency[candidate.key] - request.budget}
    return optuna.trial.create_trial(
        params=params(request.space, candidate),
        distributions=distributions(request.space, candidate.plugin),
        values=_values(request, candidate),
        constraints=constraints,
    )


def best_feasible(request: SelectRequest) -> Candidate | None:
    """The evaluated configuration with the best quality among those within the budget."""
    scored = [c for c in request.candidates if request.feasible(c) and request.measured(c)]
    return max(scored, key=lambda c: request.quality(c), default=None)


@hookimpl
def plugin_options() -> type[BaseModel]:
    return OptunaOptions


@hookimpl(optionalhook=True)  # the search plugin's hook, absent where it is disabled
def select_ratio(request: SelectRequest) -> Selection | None:
    import optuna

    from prunekit.plugins.search.study import quiet_optuna, suggest

    options = OptunaOptions.model_validate(request.options(NAME))
    best = best_feasible(request) if request.budget is not None else None
    done = [c for c in request.candidates if _done(request, c)]
    busy = {c.key for c in request.pending}
    untried = [c for c in request.candidates if not _done(request, c) and c.key not in busy]
    if not untried:
        return Selection(next=None, best=best, note=f"every configuration evaluated ({len(done)})")
    if request.evaluations_left is not None and request.evaluations_left < request.batches:
        return Selection(next=None, best=best, note="the evaluation budget cannot pay for another full evaluation")
    directions = ["maximize"] if request.budget is not None else ["maximize", "minimize"]
    quiet_optuna()
    study = optuna.create_study(directions=directions, sampler=_sampler(options, request.seed + len(request.history)))
    study.add_trials([_known_trial(request, c) for c in done])
    open_keys = {c.key for c in untried}
    for _ in range(REPEATS):
        trial = study.ask()
        proposed = suggest(trial, request.space)
        if proposed.key in open_keys:
            return Selection(next=proposed, best=best, note=f"{options.sampler} proposal")
        if proposed.key in busy:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:  # already evaluated: its known result, so that the sampler moves on
            study.tell(trial, _values(request, proposed))
    chooser = random.Random(request.seed + len(request.history))
    return Selection(next=chooser.choice(untried), best=best, note="untried configuration (the sampler repeated itself)")
