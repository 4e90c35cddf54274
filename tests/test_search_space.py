"""The search space (axes, shapes, candidates), ratio grids and latency budgets."""

from __future__ import annotations

import random

import pytest

from prunekit.errors import UsageError
from prunekit.payloads import Dimension
from prunekit.plugins.search.budget import LatencyBudget
from prunekit.plugins.search.evaluation import score_ratio
from prunekit.plugins.search.payloads import Candidate
from prunekit.plugins.search.space import Axis, Space, build_space, canonical_ratio, parse_ratios
from prunekit.slicing import kept_units


def test_canonical_ratios_keep_exactly_their_count():
    rng = random.Random(0)
    for _ in range(3000):
        units = rng.randint(1, 20_000)
        kept = rng.randint(1, units)
        assert kept_units(units, canonical_ratio(units, kept)) == kept


def test_an_axis_has_one_ratio_per_distinct_count_kept():
    heads = Axis.build(Dimension.HEADS, 3, [0.1 * i for i in range(9)])
    assert [heads.kept(r) for r in heads.ratios] == [3, 2, 1]
    assert heads.ratios == pytest.approx((0.0, 1 / 3, 2 / 3))
    assert heads.index(0.2) == 1  # 0.2 keeps 2 of 3, as 1/3 does
    ffn = Axis.build(Dimension.FFN, 1536, [0.1, 0.2, 0.3])
    assert [ffn.kept(r) for r in ffn.ratios] == [kept_units(1536, r) for r in (0.1, 0.2, 0.3)]


def space() -> Space:
    return build_space(
        {"a": (Dimension.FFN,), "b": (Dimension.FFN, Dimension.HEADS)},
        {Dimension.FFN: 10, Dimension.HEADS: 2},
        parse_ratios(["0:0.5:0.25", "heads=0,0.5"]),
    )


def test_candidates_cover_every_pruner_and_ratio_but_the_uncompressed_model():
    # 0.25 of 10 FFN units keeps int(7.5) = 7: the axis holds the exact fraction removed, 0.3
    assert {c.key for c in space().candidates()} == {
        "a ffn=0.3", "a ffn=0.5",
        "b ffn=0 heads=0.5", "b ffn=0.3 heads=0", "b ffn=0.3 heads=0.5", "b ffn=0.5 heads=0", "b ffn=0.5 heads=0.5",
    }


def test_equal_shapes_share_a_structure_whichever_pruner():
    s = space()
    a = s.find("a", {Dimension.FFN: 0.5})
    b = s.find("b", {Dimension.FFN: 0.5, Dimension.HEADS: 0.0})
    assert s.structure(a) == s.structure(b) == "ffn=5,heads=2"
    assert s.at_least_as_compressed(s.find("b", {Dimension.FFN: 0.5, Dimension.HEADS: 0.5}), a)
    assert not s.at_least_as_compressed(a, s.find("b", {Dimension.FFN: 0.0, Dimension.HEADS: 0.5}))
    assert [s.structure(c) for c in s.fastest()] == ["ffn=5,heads=1"]


def test_find_names_only_pruners_of_the_search():
    with pytest.raises(UsageError, match="'c' is not a pruner of this search"):
        space().find("c", {})


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["0.1:0.5"], "expected START:STOP:STEP"),
        (["0.1,x"], "expected START:STOP:STEP"),
        (["0.5,1.0"], "every ratio must be in [0, 1)"),
        (["depth=0.1"], "unknown dimension 'depth'"),
        (["0.3:0.1:0.1"], "holds no ratio"),
    ],
)
def test_bad_ratio_grids_are_refused(specs, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_ratios(specs)


def test_a_grid_for_a_dimension_no_pruner_offers_is_refused():
    with pytest.raises(UsageError, match="none of the pruners"):
        build_space({"a": (Dimension.FFN,)}, {Dimension.FFN: 10}, parse_ratios(["layers=0.1"]))


def test_grids_include_both_ends():
    assert parse_ratios(["0:0.8:0.1"])[None] == pytest.approx([0.1 * i for i in range(9)])
    assert parse_ratios(["ffn=0.2,0.4"]) == {Dimension.FFN: [0.2, 0.4]}


def test_candidate_keys_are_stable_and_ordered_by_dimension():
    assert Candidate("p", {Dimension.HEADS: 0.5, Dimension.FFN: 0.25}).key == "p ffn=0.25 heads=0.5"


@pytest.mark.parametrize(
    ("text", "fraction", "milliseconds"),
    [("0.7", 0.7, None), ("1", 1.0, None), ("40ms", None, 40.0), ("0.04s", None, 40.0), ("2500us", None, 2.5)],
)
def test_latency_budgets_parse(text, fraction, milliseconds):
    budget = LatencyBudget.parse(text, "prefill")
    assert (budget.fraction, budget.milliseconds, budget.kind) == (fraction, milliseconds, "prefill")


@pytest.mark.parametrize(
    ("text", "message"),
    [("1.5", "must be in (0, 1]; for an absolute budget give a unit (e.g. 1.5ms)"), ("fast", "give a fraction"),
     ("0ms", "must be positive"), ("0", "must be in (0, 1]")],
)
def test_bad_latency_budgets_are_refused(text, message):
    with pytest.raises(UsageError) as error:
        LatencyBudget.parse(text)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("grids", "expected"),
    [
        ({}, 0.4),  # no --ratios: the default grid 0, 0.1, ..., 0.8, whose non-zero median (low) is 0.4
        ({None: [0.0, 0.2, 0.6]}, 0.2),
        ({Dimension.FFN: [0.3], Dimension.HEADS: [0.0, 0.5]}, 0.3),
        ({None: [0.0]}, 0.0),
    ],
)
def test_pruners_score_at_a_ratio_of_the_grid_never_at_zero_unless_it_is_all(grids, expected):
    assert score_ratio(grids) == pytest.approx(expected)
