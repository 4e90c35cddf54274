"""The latency budget: a fraction of the uncompressed model's latency, or an absolute time.

``--latency-budget 0.7`` allows 70% of the uncompressed model's latency, ``40ms`` (or ``0.04s``,
``40000us``) an absolute time. ``--latency-kind decode`` times one decode step (one new token per
sequence of the batch, i.e. ms per token at batch size 1); ``prefill`` times the prompt (the time to
the first token). Both come from the ``latency`` evaluator's protocol (warm-up, repeated runs of
``generate``, the median): ``1000 · batch / decode_tokens_per_s`` and
``1000 · batch · prompt_tokens / prefill_tokens_per_s`` milliseconds.

A fractional budget is checked against the candidate's latency *relative to the uncompressed model
timed right before it*, not against one early measurement: on a shared machine the load changes
over a long search, and a ratio of two back-to-back measurements moves far less than either.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from prunekit.errors import UsageError

if TYPE_CHECKING:
    from prunekit.payloads import Metrics

LATENCY = "latency"
"""The evaluator that times the candidates."""
LatencyKind = Literal["decode", "prefill"]
UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}
ABSOLUTE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|us|µs)\s*$")


@dataclass(frozen=True)
class Timing:
    """The latency of one model shape: each run times the uncompressed model and then the shape.

    Usually one run; the search times the shape it is about to answer with once more, and the
    median of the runs is what counts."""

    runs: tuple[tuple[float, float], ...]
    """(shape's ms, uncompressed model's ms timed right before), per run."""

    @classmethod
    def single(cls, milliseconds: float, reference_milliseconds: float) -> Timing:
        return cls(((milliseconds, reference_milliseconds),))

    def add(self, other: Timing) -> Timing:
        return Timing(self.runs + other.runs)

    @property
    def milliseconds(self) -> float:
        return statistics.median(run[0] for run in self.runs)

    @property
    def reference_milliseconds(self) -> float:
        return statistics.median(run[1] for run in self.runs)

    @property
    def relative(self) -> float:
        """The median over runs of the shape's latency relative to the uncompressed model's."""
        return statistics.median(run[0] / run[1] for run in self.runs)


class LatencyBudget(BaseModel):
    """What a feasible configuration's latency may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: LatencyKind = "decode"
    fraction: float | None = None
    """Of the uncompressed model's latency, measured next to the candidate's."""
    milliseconds: float | None = None

    @classmethod
    def parse(cls, text: str, kind: LatencyKind = "decode") -> LatencyBudget:
        match = ABSOLUTE.match(text)
        if match:
            value = float(match.group(1)) * UNITS[match.group(2)]
            if not value > 0:
                raise UsageError(f"--latency-budget {text!r} must be positive")
            return cls(kind=kind, milliseconds=value)
        try:
            fraction = float(text)
        except ValueError:
            raise UsageError(
                f"--latency-budget {text!r}: give a fraction of the uncompressed latency (0.7) "
                f"or a time with its unit (40ms, 0.04s)"
            ) from None
        if not 0 < fraction <= 1:
            raise UsageError(
                f"--latency-budget {text!r}: a fraction of the uncompressed latency must be in (0, 1]; "
                f"for an absolute budget give a unit (e.g. {text}ms)"
            )
        return cls(kind=kind, fraction=fraction)

    @property
    def relative(self) -> bool:
        return self.milliseconds is None

    @property
    def limit(self) -> float:
        """The budget in its own unit: a fraction, or milliseconds."""
        return self.fraction if self.milliseconds is None else self.milliseconds

    @property
    def unit(self) -> str:
        return "× uncompressed" if self.relative else "ms"

    def describe(self) -> str:
        what = "decode step" if self.kind == "decode" else "prefill"
        if self.relative:
            return f"{self.fraction:g} × the uncompressed model's {what} latency"
        return f"{self.milliseconds:g} ms per {what}"


def milliseconds(metrics: Metrics, kind: LatencyKind) -> float:
    """The median latency of ``kind`` that the ``latency`` evaluator measured, in milliseconds (see the
    module docstring): its medians (``metrics.latency``) and the protocol it recorded (``metrics.details``)."""
    rates, protocol = metrics.latency, metrics.details[LATENCY]
    batch = protocol["batch_size"]
    if kind == "decode":
        return 1000.0 * batch / rates["decode_tokens_per_s"]
    return 1000.0 * batch * protocol["prompt_tokens"] / rates["prefill_tokens_per_s"]
