"""The bandit on synthetic problems whose best feasible arm is known, replayed through the real
search loop (in-memory Optuna study) from a recorded table."""

from __future__ import annotations

import math
import random

import pytest

from prunekit.config import RunConfig
from prunekit.manager import get_plugins
from prunekit.payloads import Dimension
from prunekit.plugins.bandit import Bandit, BanditOptions
from prunekit.plugins.search.budget import LatencyBudget, Timing
from prunekit.plugins.search.driver import CONFIRMING_RUNS, SearchLoop
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.payloads import Candidate, SelectRequest, Trial
from prunekit.plugins.search.quality import Reference
from prunekit.plugins.search.space import Axis, Space
from prunekit.plugins.search.study import SearchStudy
from prunekit.plugins.search.table import Table, TableEvaluator, replay

MEAN = Objective()


def synthetic_table(seed: int = 0, batches: int = 8, noise: float = 0.01) -> Table:
    """Two FFN pruners and one FFN+heads pruner; retention follows the compression law
    ``(1 + r)^β`` per pruner, batch scores carry a shared batch effect and independent noise, and
    latency falls with every ratio. Under a budget of 0.75 the best arm is ``good ffn=0.5``."""
    rng = random.Random(seed)
    ffn = Axis.build(Dimension.FFN, 100, [0.1 * i for i in range(1, 9)])
    heads = Axis.build(Dimension.HEADS, 4, [0, 0.25, 0.5])
    space = Space(
        {"good": (Dimension.FFN,), "bad": (Dimension.FFN,), "wide": (Dimension.FFN, Dimension.HEADS)},
        {Dimension.FFN: ffn, Dimension.HEADS: heads},
    )
    slopes = {"good": -1.0, "bad": -1.6, "wide": -1.3}
    tasks = {"a": 0.6, "b": 0.4}
    effects = {k: {t: rng.gauss(0, 0.03) for t in tasks} for k in range(batches)}
    reference = {str(k): {t: base + effects[k][t] for t, base in tasks.items()} for k in range(batches)}
    scores, timings = {}, {}
    for candidate in space.candidates():
        retention = math.prod((1 + r) ** slopes[candidate.plugin] for r in candidate.ratios.values())
        scores[candidate.key] = {
            str(k): {t: reference[str(k)][t] * retention + rng.gauss(0, noise) for t in tasks} for k in range(batches)
        }
        relative = 1 - 0.5 * candidate.ratios[Dimension.FFN] - 0.15 * candidate.ratios.get(Dimension.HEADS, 0.0)
        timings[space.structure(candidate)] = {"milliseconds": 10 * relative, "reference_milliseconds": 10.0}
    return Table(
        model="synthetic",
        pruners={p: [d.value for d in dims] for p, dims in space.pruners.items()},
        axes={d.value: {"units": a.units, "ratios": list(a.ratios)} for d, a in space.axes.items()},
        batches=batches,
        reference=reference,
        timings=timings,
        scores=scores,
    )


@pytest.mark.parametrize("seed", range(4))
def test_bandit_finds_the_known_best_arm_with_a_fraction_of_the_grid(seed):
    table = synthetic_table(seed)
    best = table.best(MEAN, 0.75)
    assert best.key == "good ffn=0.5"
    outcome = replay(table, get_plugins(), "bandit", objective=MEAN, budget=0.75, seed=seed)
    assert outcome.selection.best.key == best.key
    grid = len(table.space().candidates())
    assert outcome.evaluations / table.batches <= grid / 4, outcome.evaluations
    assert "best arm identified" in outcome.selection.note


def test_bandit_never_answers_an_infeasible_arm_and_presumes_latency_monotone():
    table = synthetic_table(1)
    outcome = replay(table, get_plugins(), "bandit", objective=MEAN, budget=0.75, seed=1)
    space = table.space()
    for trial in outcome.history:
        feasible = table.timing(space, trial.candidate).relative <= 0.75
        assert trial.feasible == feasible
        if not feasible:
            assert trial.scores == {}  # quality is not measured over the budget
    # feasibility is settled by bisection over shapes: far fewer timings than shapes
    shapes = {space.structure(c) for c in space.candidates()}
    assert len(outcome.timings) < len(shapes)


def test_bandit_reports_an_unreachable_budget_with_no_best_arm():
    outcome = replay(synthetic_table(), get_plugins(), "bandit", objective=MEAN, budget=0.3, seed=0)
    assert outcome.selection.best is None
    assert "no configuration meets" in outcome.selection.note
    assert outcome.evaluations == 0


def test_bandit_stops_when_the_evaluation_budget_is_spent():
    table = synthetic_table(2)
    outcome = replay(table, get_plugins(), "bandit", objective=MEAN, budget=0.75, seed=2, max_evaluations=0.5)
    assert outcome.evaluations <= table.batches // 2
    assert outcome.selection.next is None
    assert "budget is spent" in outcome.selection.note


def test_bandit_leaves_a_search_without_budget_to_a_pareto_selector():
    table = synthetic_table()
    space = table.space()
    request = SelectRequest(
        candidates=space.candidates(), history=[], config=None, objective=MEAN,
        reference=table.reference_scores(), batches=table.batches, budget=None, space=space,
    )
    from prunekit.plugins import bandit

    assert bandit.select_ratio(request) is None


def test_the_compression_law_predicts_arms_never_pulled():
    """Arms of one pruner pulled at 0.1, 0.3, 0.5 and 0.8 predict 0.2, 0.4 and 0.6 through
    log Q = c + β log(1 + r), with intervals that cover the truth."""
    axis = Axis.build(Dimension.FFN, 100, [0.1 * i for i in range(1, 9)])
    space = Space({"p": (Dimension.FFN,)}, {Dimension.FFN: axis})
    reference = Reference({0: {"a": 0.5}, 1: {"a": 0.5}})
    truth = {c.key: (1 + c.ratios[Dimension.FFN]) ** -1.2 for c in space.candidates()}
    rng = random.Random(0)
    history = [
        Trial(c, True, 0.5, {k: {"a": 0.5 * truth[c.key] + rng.gauss(0, 0.002)} for k in range(2)})
        for c in space.candidates()
        if round(c.ratios[Dimension.FFN], 1) in (0.1, 0.3, 0.5, 0.8)
    ]
    request = SelectRequest(
        candidates=space.candidates(), history=history, config=None, objective=MEAN, reference=reference,
        batches=4, budget=1.0, latency={c.key: 0.5 for c in space.candidates()}, space=space,
    )
    bandit = Bandit(request, BanditOptions())
    estimates = bandit.estimates(space.candidates())
    for candidate in space.candidates():
        if round(candidate.ratios[Dimension.FFN], 1) in (0.2, 0.4, 0.6):
            estimate = estimates[candidate.key]
            assert estimate.pulls == 0
            assert abs(estimate.mean - truth[candidate.key]) < 0.01
            assert abs(estimate.mean - truth[candidate.key]) <= 3 * estimate.sd


def test_a_request_without_space_is_a_programming_error():
    request = SelectRequest(candidates=[Candidate("p", {})], history=[], config=None, objective=MEAN,
                            reference=Reference({0: {"a": 1.0}}), batches=1, budget=0.5)
    with pytest.raises(ValueError, match="search space"):
        Bandit(request, BanditOptions())


def test_the_answer_is_timed_again_before_it_is_accepted():
    table = synthetic_table(0)
    outcome = replay(table, get_plugins(), "bandit", objective=MEAN, budget=0.75, seed=0)
    structure = table.space().structure(outcome.selection.best)
    assert len(outcome.timings[structure].runs) == CONFIRMING_RUNS


class SlowerLater(TableEvaluator):
    """The first timing of ``structure`` is the table's; every later one is ``later`` × slower,
    as when a shared machine gets busier."""

    def __init__(self, table: Table, structure: str, later: float) -> None:
        super().__init__(table)
        self.structure, self.later, self.timed = structure, later, 0

    def prepare(self, candidate: Candidate):
        recorded = super().prepare(candidate)
        if self.space.structure(candidate) != self.structure:
            return recorded
        evaluator = self

        class Drifting:
            def time(self) -> Timing:
                evaluator.timed += 1
                first = recorded.time()
                factor = 1.0 if evaluator.timed == 1 else evaluator.later
                return Timing.single(first.milliseconds * factor, first.reference_milliseconds)

            def scores(self, batch: int) -> dict[str, float]:
                return recorded.scores(batch)

        return Drifting()


def test_an_answer_whose_repeated_timing_crosses_the_budget_is_not_accepted():
    table = synthetic_table(0)
    plugins = get_plugins()
    first = table.best(MEAN, 0.75)  # good ffn=0.5 at exactly 0.75 × the uncompressed latency
    structure = table.space().structure(first)
    config = plugins.resolve_options(RunConfig(model=table.model, plugins=["bandit"], seed=0))
    loop = SearchLoop(
        config=config, evaluator=SlowerLater(table, structure, later=1.1), hooks=plugins.hooks(["bandit"]),
        study=SearchStudy(None, "drift", ["maximize"]), budget=LatencyBudget(fraction=0.75), objective=MEAN,
        batches=table.batches, max_evaluations=None,
    )
    outcome = loop.run()
    assert outcome.timings[structure].relative > 0.75  # the median of its runs
    assert outcome.selection.best is not None and outcome.selection.best.key != first.key
    answer = table.space().structure(outcome.selection.best)
    assert outcome.timings[answer].relative <= 0.75 and len(outcome.timings[answer].runs) == CONFIRMING_RUNS
