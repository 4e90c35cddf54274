"""The α-fair objective: its limits, and that the score a search ranks by ranks as U_α does."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from prunekit.errors import UsageError
from prunekit.plugins.search.objective import Objective, alpha_fair_utility, equivalent_retention
from prunekit.plugins.search.quality import Reference

RETENTION = [0.95, 0.7, 0.88, 0.4, 0.99]


def test_alpha_zero_is_the_mean():
    assert alpha_fair_utility(RETENTION, 0) == pytest.approx(sum(RETENTION))  # the sum, n times the mean
    assert equivalent_retention(RETENTION, 0) == pytest.approx(sum(RETENTION) / len(RETENTION))
    assert Objective(kind="alpha-fair", alpha=0)(dict(enumerate(RETENTION))) == pytest.approx(
        Objective(kind="mean")(dict(enumerate(RETENTION)))
    )


def test_alpha_one_is_the_sum_of_logs_and_the_geometric_mean():
    assert alpha_fair_utility(RETENTION, 1) == pytest.approx(sum(map(math.log, RETENTION)))
    assert equivalent_retention(RETENTION, 1) == pytest.approx(math.prod(RETENTION) ** (1 / len(RETENTION)))


@pytest.mark.parametrize("alpha", [20, 100, 1000, 10_000])
def test_large_alpha_approaches_the_worst_task(alpha):
    value = equivalent_retention(RETENTION, alpha)
    assert min(RETENTION) <= value <= min(RETENTION) * (len(RETENTION) ** (1 / (alpha - 1)))
    assert value == pytest.approx(min(RETENTION), rel=0.1 if alpha == 20 else 0.02)


def test_alpha_moves_monotonically_from_the_mean_to_the_minimum():
    values = [equivalent_retention(RETENTION, a) for a in (0, 0.5, 1, 2, 5, 50)]
    assert values == sorted(values, reverse=True)


def test_the_equivalent_retention_ranks_exactly_as_the_utility():
    rng = random.Random(0)
    for alpha in (0, 0.5, 1, 2, 7):
        configs = [[rng.uniform(0.05, 1.1) for _ in range(4)] for _ in range(30)]
        by_utility = sorted(range(30), key=lambda i: alpha_fair_utility(configs[i], alpha))
        by_equivalent = sorted(range(30), key=lambda i: equivalent_retention(configs[i], alpha))
        assert by_utility == by_equivalent


def test_fairness_prefers_no_collapsed_task():
    collapsed = {"a": 1.0, "b": 1.0, "c": 0.1}  # mean 0.70, one task gone
    balanced = {"a": 0.66, "b": 0.66, "c": 0.66}
    assert Objective(kind="mean")(collapsed) > Objective(kind="mean")(balanced)
    assert Objective(kind="alpha-fair", alpha=1)(collapsed) < Objective(kind="alpha-fair", alpha=1)(balanced)


def test_a_collapsed_task_is_infinitely_bad_from_alpha_one():
    assert alpha_fair_utility([0.9, 0.0], 1) == -math.inf
    assert alpha_fair_utility([0.9, 0.0], 3) == -math.inf
    assert equivalent_retention([0.9, 0.0], 2) == 0.0
    assert equivalent_retention([0.9, 0.0], 0.5) == pytest.approx(((0.9**0.5) / 2) ** 2)


def test_bad_objectives_are_refused():
    with pytest.raises(ValidationError):
        Objective(kind="alpha-fair", alpha=-1)
    with pytest.raises(ValidationError):
        Objective(kind="median")
    with pytest.raises(ValueError, match="non-negative"):
        equivalent_retention([0.5, -0.1], 1)


def test_retention_pairs_batches_with_the_reference():
    """Each batch contributes the candidate's difference from the uncompressed model on the same
    examples; with every batch in, retention is exactly the ratio of full scores."""
    reference = Reference({0: {"acc": 0.5, "loss": 3.0}, 1: {"acc": 0.7, "loss": 2.0}}, frozenset({"loss"}))
    measured = {0: {"acc": 0.4, "loss": 3.3}, 1: {"acc": 0.6, "loss": 2.1}}
    full = reference.retention(measured)
    assert full["acc"] == pytest.approx(0.5 / 0.6)
    assert full["loss"] == pytest.approx(2.5 / 2.7)
    one = reference.retention({0: measured[0]})
    assert one["acc"] == pytest.approx((0.6 - 0.1) / 0.6)  # the full reference plus batch 0's difference
    assert one["loss"] == pytest.approx(2.5 / (2.5 + 0.3))


def test_a_task_the_uncompressed_model_fails_entirely_is_refused():
    with pytest.raises(UsageError, match="scores 0 on arc"):
        Reference({0: {"arc": 0.0, "loss": 2.0}})
