"""``latency``: prefill and decode throughput and peak memory, measured the same way every time.

Protocol: a batch of ``batch_size`` prompts of ``prompt_tokens`` seeded random token ids (speed
does not depend on the text) is given to the model's own ``generate`` (greedy, KV cache on),
which must produce exactly ``new_tokens`` tokens (end-of-sequence is suppressed until then).
A streamer timestamps the prompt and every new token as ``generate`` hands them out; prefill is
the time from the prompt to the first token, decode the time from the first to the last token.
``warmup`` untimed runs come first, then ``repeats`` timed runs; the report gives each rate's
median with its minimum and maximum, and keeps the per-run values. Peak memory is taken in one
more run, apart from the timed ones so that sampling it cannot slow them: on CUDA the
allocator's peak during that run (weights included); on CPU, which keeps no allocator
statistics, the weights plus the growth of the process's resident memory over the run, sampled
every few milliseconds (memory the allocator reuses from earlier runs does not show as growth,
so this is a lower bound of the working memory). The process's own peak is no measure of the
model: it holds whatever else the run loaded (datasets, lm-eval), before and after alike.

Speed depends on the machine and on what else runs on it, so a run measures the baseline and
the compressed model in the same process with the same settings, and the baseline cache never
stores latency (see :mod:`prunekit.baselines`).
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl, memory
from prunekit.errors import UsageError
from prunekit.payloads import EvalRequest, Metrics

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from prunekit.plugins.evaluators.token_clock import TokenClock

NAME = "latency"
SAMPLE_SECONDS = 0.002


class LatencyOptions(BaseModel):
    """Settings of ``latency`` under ``options: {latency: {...}}``."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=1, gt=0, description="Sequences generated at once.")
    prompt_tokens: int = Field(default=128, gt=0, description="Prompt length in tokens (the prefill).")
    new_tokens: int = Field(default=32, ge=2, description="Tokens generated per sequence (the decode).")
    warmup: int = Field(default=1, ge=0, description="Untimed runs first.")
    repeats: int = Field(default=5, gt=0, description="Timed runs; the report gives their median.")


@dataclass(frozen=True)
class Latency:
    """Per-run throughputs and the memory of one model under one protocol."""

    prefill_tokens_per_s: list[float]
    decode_tokens_per_s: list[float]
    peak_memory_mb: float
    memory_kind: str
    """What ``peak_memory_mb`` measures (see the module docstring)."""
    weights_mb: float
    """Parameters and buffers in memory, in the dtype the model computes in."""
    options: LatencyOptions
    device: str
    dtype: str
    threads: int

    def summary(self) -> dict[str, float]:
        """Median, minimum and maximum of each rate, and the memory figures."""
        values: dict[str, float] = {}
        for name, runs in (("prefill", self.prefill_tokens_per_s), ("decode", self.decode_tokens_per_s)):
            values[f"{name}_tokens_per_s"] = statistics.median(runs)
            values[f"{name}_tokens_per_s_min"] = min(runs)
            values[f"{name}_tokens_per_s_max"] = max(runs)
        values["peak_memory_mb"] = self.peak_memory_mb
        values["weights_mb"] = self.weights_mb
        return values

    def protocol(self) -> dict[str, object]:
        """How it was measured, for the report; the per-run rates included."""
        return {
            **self.options.model_dump(),
            "device": self.device,
            "dtype": self.dtype,
            "cpu_threads": self.threads,
            "memory": self.memory_kind,
            "runs": {"prefill_tokens_per_s": self.prefill_tokens_per_s, "decode_tokens_per_s": self.decode_tokens_per_s},
        }


class _ResidentPeak:
    """The highest resident memory of this process seen while the block runs, sampled in a thread."""

    def __init__(self) -> None:
        self.peak_mb = memory.current_mb() or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak_mb = max(self.peak_mb, memory.current_mb() or 0.0)

    def __enter__(self) -> _ResidentPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, memory.current_mb() or 0.0)


def _generate(model: PreTrainedModel, prompts: torch.Tensor, new_tokens: int) -> TokenClock:
    import torch

    from prunekit.plugins.evaluators.token_clock import TokenClock

    clock = TokenClock()
    model.generate(
        input_ids=prompts,
        attention_mask=torch.ones_like(prompts),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        streamer=clock,
        pad_token_id=model.config.pad_token_id if model.config.pad_token_id is not None else 0,
    )
    if len(clock.times) != new_tokens + 1:
        raise RuntimeError(f"generate produced {len(clock.times) - 1} tokens instead of {new_tokens}")
    return clock


def measure(model: PreTrainedModel, options: LatencyOptions | None = None, *, seed: int = 0) -> Latency:
    """Time prefill and decode of ``model`` under ``options`` and take its peak memory."""
    import torch

    options = options or LatencyOptions()
    context = getattr(model.config, "max_position_embeddings", None)
    if context and options.prompt_tokens + options.new_tokens > context:
        raise UsageError(
            f"latency: prompt_tokens + new_tokens = {options.prompt_tokens + options.new_tokens} "
            f"exceeds the model's context of {context} tokens"
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    prompts = torch.randint(0, vocab, (options.batch_size, options.prompt_tokens), generator=generator).to(device)

    for _ in range(options.warmup):
        _generate(model, prompts, options.new_tokens)
    prefill, decode = [], []
    for _ in range(options.repeats):
        times = _generate(model, prompts, options.new_tokens).times
        prefill.append(options.batch_size * options.prompt_tokens / (times[1] - times[0]))
        decode.append(options.batch_size * (options.new_tokens - 1) / (times[-1] - times[1]))

    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values()) / 2**20
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        _generate(model, prompts, options.new_tokens)
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "CUDA allocator peak"
    else:
        start = memory.current_mb() or 0.0
        with _ResidentPeak() as resident:
            _generate(model, prompts, options.new_tokens)
        peak, kind = weights + max(0.0, resident.peak_mb - start), "weights + resident memory growth (CPU)"
    return Latency(
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        peak_memory_mb=round(peak, 2),
        memory_kind=kind,
        weights_mb=round(weights, 2),
        options=options,
        device=str(device),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
    )


@hookimpl
def plugin_options() -> type[BaseModel]:
    return LatencyOptions


@hookimpl
def evaluate(request: EvalRequest) -> Metrics | None:
    if request.stage == "recovery":  # recovery changes weights, not shapes: the speed stays
        return None
    result = measure(request.model, LatencyOptions.model_validate(request.options(NAME)), seed=request.config.seed)
    return Metrics(latency=result.summary(), details={NAME: result.protocol()})
