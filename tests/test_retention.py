"""Above-chance retention and the standard errors of zero-shot scores (``prunekit.chance``), as report.json holds them
(``prunekit.output.retention``) and report.md shows them."""

from __future__ import annotations

import math

import pytest

from prunekit.chance import above_chance_retention, average_stderr
from prunekit.output import retention
from prunekit.payloads import Metrics
from prunekit.plugins.report.markdown import zeroshot_lines


def test_above_chance_retention_and_its_standard_error_by_hand():
    kept = above_chance_retention(0.6, 0.012, 0.7, 0.01, 0.5)
    assert kept.retention == pytest.approx(0.1 / 0.2) and kept.reason is None
    assert kept.stderr == pytest.approx(math.sqrt(0.012**2 + 0.5**2 * 0.01**2) / 0.2)  # 0.065
    below = above_chance_retention(0.2, 0.01, 0.35, 0.02, 0.25)  # worse than guessing after: a negative share
    assert below.retention == pytest.approx(-0.5)
    assert below.stderr == pytest.approx(math.sqrt(0.01**2 + 0.25 * 0.02**2) / 0.1)
    unknown = above_chance_retention(0.6, None, 0.7, 0.01, 0.5)
    assert unknown.retention == pytest.approx(0.5) and unknown.stderr is None
    assert above_chance_retention(0.26, 0.02, 0.5, 0.24, 0.25).retention == pytest.approx(0.04)  # clear by a hair


@pytest.mark.parametrize(("before", "stderr", "words"), [
    (0.25, 0.01, "not above chance"),
    (0.2, 0.01, "not above chance"),
    (0.265, 0.02, "within one standard error (0.02) of chance"),
    (0.5, 0.25, "within one standard error (0.25) of chance"),  # exactly one: still noise
])
def test_above_chance_retention_is_null_with_a_reason_where_before_is_not_clear_of_chance(before, stderr, words):
    kept = above_chance_retention(0.26, 0.02, before, stderr, 0.25)
    assert kept.retention is None and kept.stderr is None
    assert words in kept.reason and f"{before:.4g}" in kept.reason


def test_the_average_of_independent_tasks_has_the_root_sum_of_squares_over_k():
    assert average_stderr([0.03, 0.04]) == pytest.approx(0.025)
    assert average_stderr([0.02]) == pytest.approx(0.02)


def scored(accuracy: dict[str, float], stderr: dict[str, float], chance: dict[str, float]) -> Metrics:
    return Metrics(tasks={task: {"acc": value} for task, value in accuracy.items()},
                   primary_metric=dict.fromkeys(accuracy, "acc"),
                   details={"zeroshot": {"stderr": {task: {"acc": se} for task, se in stderr.items()},
                                         "chance": chance}})


CHANCE = {"piqa": 0.5, "hellaswag": 0.25}
BEFORE = scored({"piqa": 0.7, "hellaswag": 0.45}, {"piqa": 0.01, "hellaswag": 0.02}, CHANCE)
AFTER = scored({"piqa": 0.6, "hellaswag": 0.35}, {"piqa": 0.012, "hellaswag": 0.021}, CHANCE)


def test_report_retention_gives_each_task_and_the_average_above_chance():
    kept = retention(BEFORE, AFTER)
    piqa = kept.tasks["piqa"]
    assert (piqa.before_stderr, piqa.after_stderr, piqa.chance) == (0.01, 0.012, 0.5)
    assert piqa.above_chance == above_chance_retention(0.6, 0.012, 0.7, 0.01, 0.5)
    assert kept.tasks["hellaswag"].above_chance.retention == pytest.approx(0.5)
    assert kept.average_before_stderr == pytest.approx(math.sqrt(0.01**2 + 0.02**2) / 2)
    assert kept.average_after_stderr == pytest.approx(math.sqrt(0.012**2 + 0.021**2) / 2)
    assert kept.average_chance == pytest.approx(0.375)
    assert kept.average_above_chance == above_chance_retention(
        0.475, kept.average_after_stderr, 0.575, kept.average_before_stderr, 0.375)
    assert kept.average_above_chance.retention == pytest.approx(0.1 / 0.2)
    assert kept.average_retention == pytest.approx(0.475 / 0.575)  # the plain ratio stays as it was


def test_chance_comes_from_either_stage_and_without_it_there_is_no_above_chance_retention():
    cached = scored({"piqa": 0.7, "hellaswag": 0.45}, {}, {})  # a "before" recorded without chance or stderr
    kept = retention(cached, AFTER)
    assert kept.tasks["piqa"].chance == 0.5 and kept.tasks["piqa"].above_chance.stderr is None
    assert kept.average_before_stderr is None and kept.average_above_chance.stderr is None
    unknown = retention(scored({"piqa": 0.7}, {"piqa": 0.01}, {}), scored({"piqa": 0.6}, {"piqa": 0.01}, {}))
    assert unknown.tasks["piqa"].above_chance is None and unknown.average_chance is None
    assert unknown.average_above_chance is None


def test_report_md_shows_every_task_and_the_average_with_their_noise():
    near = scored({"piqa": 0.7, "arc": 0.26}, {"piqa": 0.01, "arc": 0.02}, {"piqa": 0.5, "arc": 0.25})
    lines = zeroshot_lines(retention(near, scored({"piqa": 0.6, "arc": 0.27}, {"piqa": 0.012, "arc": 0.02},
                                                  {"piqa": 0.5, "arc": 0.25})))
    assert lines[0] == "| zero-shot task | before | after | chance | above-chance retention |"
    assert "| piqa (acc) | 0.7 ± 0.01 | 0.6 ± 0.012 | 0.5 | 0.500 ± 0.065 |" in lines
    assert ("| arc (acc) | 0.26 ± 0.02 | 0.27 ± 0.02 | 0.25 | not given: the uncompressed model's 0.26 is within "
            "one standard error (0.02) of chance (0.25) |") in lines
    average = next(line for line in lines if line.startswith("| average |"))
    assert average.startswith("| average | 0.48 ± 0.01118 | 0.435 ± 0.01166 | 0.375 | ")
    assert zeroshot_lines(retention(Metrics(), Metrics())) == []
