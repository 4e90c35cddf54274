"""``perplexity``: perplexity and mean token cross-entropy of a text, over fixed token windows.

The text defaults to the first half of WikiText-2's test split from the benchmark data folder
(``wikitext2.test.raw[:50%]``: recovery fine-tuning trains on the other half, so the two never
overlap), else the Hub's ``wikitext:wikitext-2-raw-v1`` test split. The text is tokenized once
into one stream (cached, :mod:`prunekit.plugins.data`) and cut into windows of ``length`` tokens starting
every ``stride`` tokens (or, with ``sample``, drawn at random offsets seeded by the run's seed: a
search's evaluation batches). Each window is one forward pass with no padding; when windows overlap
(``stride < length``) a window scores only the tokens the previous one did not, so that every
token after the first is scored exactly once and the overlap serves as context. The result is
the mean cross-entropy over all scored tokens (the "test loss" the compression laws fit) and its
exponential, the perplexity.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl
from prunekit.plugins.data import DEFAULT_TEXT, EVALUATION_HALF, default_text, sample_windows, token_stream, windows
from prunekit.errors import UsageError
from prunekit.payloads import EvalRequest, Metrics
from prunekit.progress import track

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

NAME = "perplexity"
DEFAULT_LENGTH = 2048
IGNORE = -100


class PerplexityOptions(BaseModel):
    """Settings of ``perplexity`` under ``options: {perplexity: {...}}``."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        default=None,
        description="Text to score: a local file or folder, or a Hub dataset name[:config], optionally "
        f"with a token range [a%:b%]. Default: {DEFAULT_TEXT}{EVALUATION_HALF}, shipped with prunekit.",
    )
    split: str = Field(default="test", description="Split of a Hub dataset.")
    text_field: str = Field(default="text", description="Field holding the text in JSON or Hub data.")
    length: int | None = Field(
        default=None, gt=1, description=f"Tokens per window; default {DEFAULT_LENGTH} or the model's context if shorter."
    )
    stride: int | None = Field(default=None, gt=0, description="Tokens between window starts; default: length (no overlap).")
    windows: int | None = Field(default=4, gt=0, description="Number of windows from the start of the text; null: all.")
    batch_size: int = Field(default=1, gt=0, description="Windows per forward pass.")
    sample: bool = Field(
        default=False,
        description="Draw the windows at random offsets of the text, seeded by the run's seed, instead of "
        "consecutive ones from its start (stride does not apply).",
    )


@dataclass(frozen=True)
class Perplexity:
    """One perplexity measurement and how it was taken."""

    perplexity: float
    loss: float
    """Mean token cross-entropy in nats; ``perplexity == exp(loss)``."""
    tokens: int
    """Tokens scored (every token of every window except the first, minus overlaps)."""
    windows: int
    length: int
    stride: int


def default_source() -> str:
    return default_text(EVALUATION_HALF)


def context_length(model: PreTrainedModel) -> int | None:
    """The longest input the model's position embeddings allow, where its config says."""
    return getattr(model.config, "max_position_embeddings", None)


def window_length(model: PreTrainedModel, requested: int | None) -> int:
    context = context_length(model)
    if requested is None:
        return min(DEFAULT_LENGTH, context) if context else DEFAULT_LENGTH
    if context and requested > context:
        raise UsageError(f"options.perplexity.length {requested} exceeds the model's context of {context} tokens")
    return requested


def window_stride(length: int, stride: int | None) -> int:
    """``stride`` (default: ``length``), refused where it would leave tokens between windows unscored."""
    if stride is not None and stride > length:
        raise UsageError(f"perplexity stride {stride} exceeds the window length {length}; tokens would go unscored")
    return stride or length


def measure(
    model: PreTrainedModel,
    stream: torch.Tensor,
    *,
    length: int,
    stride: int | None = None,
    windows_count: int | None = None,
    batch_size: int = 1,
) -> Perplexity:
    """Perplexity of ``model`` on the 1-D token ``stream``, ``windows_count`` windows from its start."""
    import torch

    stride = window_stride(length, stride)
    batches = windows(stream, length, windows_count, stride)
    overlap = length - stride
    device = execution_device(model)
    total, scored = 0.0, 0
    with torch.inference_mode():
        for start in track(range(0, len(batches), batch_size), "perplexity", total=math.ceil(len(batches) / batch_size)):
            ids = batches[start : start + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            targets = ids[:, 1:].clone()
            if overlap:  # later windows score only what the previous window did not
                targets[1 if start == 0 else 0 :, : overlap - 1] = IGNORE
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
            ).item()
            scored += int((targets != IGNORE).sum())
    loss = total / scored
    return Perplexity(math.exp(loss), loss, scored, len(batches), length, stride)


@hookimpl
def plugin_options() -> type[BaseModel]:
    return PerplexityOptions


@hookimpl
def evaluate(request: EvalRequest) -> Metrics | None:
    options = PerplexityOptions.model_validate(request.options(NAME))
    if request.tokenizer is None:
        if NAME in request.config.plugins:
            raise UsageError(f"perplexity needs a tokenizer, and model {request.config.model!r} has none")
        log.warning("perplexity skipped: model %r has no tokenizer", request.config.model)
        return None
    length = window_length(request.model, options.length)  # bad settings fail before any text is read
    stride = window_stride(length, options.stride)
    if options.sample and (options.stride is not None or options.windows is None):
        raise UsageError("options.perplexity.sample draws a number of windows (windows) and takes no stride")
    source = options.source or default_source()
    stream = token_stream(request.tokenizer, source, split=options.split, text_field=options.text_field)
    if options.sample:  # the drawn windows, end to end: ``measure`` cuts them apart again
        stream = sample_windows(stream, length, options.windows, request.config.seed).reshape(-1)
    result = measure(
        request.model,
        stream,
        length=length,
        stride=stride,
        windows_count=options.windows,
        batch_size=options.batch_size,
    )
    details = {
        "source": source,
        "split": options.split,
        "windows": result.windows,
        "length": result.length,
        "stride": result.stride,
        "tokens_scored": result.tokens,
        "batch_size": options.batch_size,
    }
    if options.sample:
        details["sample_seed"] = request.config.seed
    return Metrics(perplexity=result.perplexity, loss=result.loss, details={NAME: details})


def execution_device(model: PreTrainedModel):
    """Where the model's inputs go: its first weight's device, or, for a model accelerate placed with offloading
    (``core eval --offload``), its main device (the first GPU it uses, else the CPU), where offloaded layers run."""
    import torch

    placed = getattr(model, "hf_device_map", None)
    if placed:
        used = [device for device in placed.values() if device not in ("cpu", "disk")]
        return torch.device(used[0] if used else "cpu")
    return next(model.parameters()).device
