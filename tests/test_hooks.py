"""The typed facade: merging evaluator results."""

from __future__ import annotations

import pytest

from prunekit.hooks import merge_metrics
from prunekit.payloads import Metrics


def test_metrics_from_several_evaluators_are_merged():
    merged = merge_metrics([
        Metrics(perplexity=20.1),
        Metrics(tasks={"piqa": {"acc": 0.6}}, latency={"decode_tokens_per_s": 30.0}),
        Metrics(tasks={"arc_easy": {"acc": 0.5}}, extra={"bytes_on_disk": 1e6}),
    ])
    assert merged == Metrics(
        perplexity=20.1,
        tasks={"piqa": {"acc": 0.6}, "arc_easy": {"acc": 0.5}},
        latency={"decode_tokens_per_s": 30.0},
        extra={"bytes_on_disk": 1e6},
    )


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (Metrics(perplexity=1.0), Metrics(perplexity=2.0), "two evaluators reported perplexity"),
        (Metrics(tasks={"piqa": {}}), Metrics(tasks={"piqa": {}}), r"two evaluators reported tasks \['piqa'\]"),
        (Metrics(extra={"x": 1.0}), Metrics(extra={"x": 1.0}), r"two evaluators reported extra \['x'\]"),
    ],
)
def test_a_metric_reported_twice_is_an_error(first, second, message):
    with pytest.raises(RuntimeError, match=message):
        merge_metrics([first, second])


def test_no_evaluator_gives_empty_metrics():
    assert merge_metrics([]) == Metrics()
