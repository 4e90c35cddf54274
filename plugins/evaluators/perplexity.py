"""``perplexity``: perplexity, bits per byte and word perplexity of a text, over fixed token windows.

The text defaults to the first half of WikiText-2's test split shipped with prunekit
(``wikitext2.test.raw[:50%]``); nothing trains or calibrates on WikiText by default (their text is
the OpenStax excerpt, :mod:`prunekit.plugins.data`). The text is tokenized once into one stream
(cached) and cut into windows of ``length`` tokens starting every ``stride`` tokens (or, with
``sample``, drawn at random offsets seeded by the run's seed: a search's evaluation batches).

Each window is one forward pass with no padding, preceded by the tokenizer's BOS token (its EOS
where it has none), as lm-eval's rolling log-likelihood does: every token of the window is scored,
the first conditioned on that prefix alone. When windows overlap (``stride < length``) a window
scores only the tokens the previous one did not, so every token is scored exactly once and the
overlap serves as context.

Three figures of the same scored tokens, lm-eval's wikitext definitions:

- ``loss``, the mean token cross-entropy in nats (the "test loss" the compression laws fit), and
  ``perplexity`` = exp(loss), per token: they change with the tokenizer, so two models with
  different vocabularies cannot be compared by them;
- ``bits_per_byte`` = total cross-entropy / (ln 2 × UTF-8 bytes of the scored text);
- ``word_perplexity`` = exp(total cross-entropy / whitespace-separated words of the scored text).

The last two are per unit of *text*, so two tokenizations of one text that a model gives the same
likelihood have the same figures. The bytes and words of each token come from the tokenizer's
character offsets (:func:`prunekit.plugins.data.token_units`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit import hookimpl
from prunekit.plugins.data import (EVALUATION_HALF, EVALUATION_TEXT, evaluation_text, sample_windows, token_stream,
                                   token_units, window_starts)
from prunekit.errors import UsageError
from prunekit.payloads import EvalRequest, Metrics
from prunekit.progress import track

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
        f"with a token range [a%:b%]. Default: {EVALUATION_TEXT}{EVALUATION_HALF}, shipped with prunekit.",
    )
    split: str = Field(default="test", description="Split of a Hub dataset.")
    text_field: str = Field(default="text", description="Field holding the text in JSON or Hub data.")
    length: int | None = Field(
        default=None, gt=0,
        description=f"Tokens scored per window (after the BOS prefix); default {DEFAULT_LENGTH}, or the model's context "
        "less one if shorter.",
    )
    stride: int | None = Field(default=None, gt=0, description="Tokens between window starts; default: length (no overlap).")
    windows: int | None = Field(
        default=4, gt=0, description="Number of windows from the start of the text; all (or null): the whole text."
    )
    batch_size: int = Field(default=1, gt=0, description="Windows per forward pass.")
    sample: bool = Field(
        default=False,
        description="Draw the windows at random offsets of the text, seeded by the run's seed, instead of "
        "consecutive ones from its start (stride does not apply).",
    )

    @field_validator("windows", mode="before")
    @classmethod
    def _all_is_the_whole_text(cls, windows: object) -> object:
        return None if windows == "all" else windows


@dataclass(frozen=True)
class Perplexity:
    """One perplexity measurement and how it was taken."""

    perplexity: float
    loss: float
    """Mean token cross-entropy in nats; ``perplexity == exp(loss)``."""
    tokens: int
    """Tokens scored (every token of every window, minus overlaps)."""
    windows: int
    length: int
    stride: int
    bytes: int | None = None
    """UTF-8 bytes of the scored text (``None`` where the tokenizer gives no offsets)."""
    words: int | None = None
    """Whitespace-separated words of the scored text."""

    @property
    def bits_per_byte(self) -> float | None:
        return None if not self.bytes else self.loss * self.tokens / (self.bytes * math.log(2))

    @property
    def word_perplexity(self) -> float | None:
        return None if not self.words else math.exp(self.loss * self.tokens / self.words)


def default_source() -> str:
    return evaluation_text()


def context_length(model: PreTrainedModel) -> int | None:
    """The longest input the model's position embeddings allow, where its config says."""
    return getattr(model.config, "max_position_embeddings", None)


def window_length(model: PreTrainedModel, requested: int | None) -> int:
    """Tokens scored per window: one position of the model's context goes to the BOS prefix."""
    context = context_length(model)
    if requested is None:
        return min(DEFAULT_LENGTH, context - 1) if context else DEFAULT_LENGTH
    if context and requested + 1 > context:
        raise UsageError(f"options.perplexity.length {requested} and its BOS prefix exceed the model's context of "
                         f"{context} tokens; give at most {context - 1}")
    return requested


def window_stride(length: int, stride: int | None) -> int:
    """``stride`` (default: ``length``), refused where it would leave tokens between windows unscored."""
    if stride is not None and stride > length:
        raise UsageError(f"perplexity stride {stride} exceeds the window length {length}; tokens would go unscored")
    return stride or length


def scored_windows(tokens: int, length: int, stride: int, count: int | None) -> tuple[list[int], list[int]]:
    """Where each window starts (:func:`~prunekit.plugins.data.window_starts`), and how many of its first tokens an
    earlier window already scored. ``count`` windows from the start; ``None``, the whole text: a last window ending
    at the text's end scores the tail a whole window would not reach, with the tokens before it as context, so every
    token is scored once."""
    starts = window_starts(tokens, length, count, stride)
    skips = [0] + [length - stride] * (len(starts) - 1)
    reached = starts[-1] + length
    if count is None and reached < tokens:
        starts.append(tokens - length)
        skips.append(reached - (tokens - length))
    return starts, skips


def prefix_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token each window starts from: BOS, else EOS, as lm-eval's ``prefix_token_id``."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise UsageError("perplexity starts each window from the tokenizer's BOS or EOS token, and it has neither")
    return token


def measure(
    model: PreTrainedModel,
    stream: torch.Tensor,
    *,
    prefix: int,
    length: int,
    stride: int | None = None,
    windows_count: int | None = None,
    batch_size: int = 1,
    units: torch.Tensor | None = None,
) -> Perplexity:
    """Perplexity of ``model`` on the 1-D token ``stream``, ``windows_count`` windows from its start, each after the
    ``prefix`` token; ``units`` (``[len(stream), 2]``, :func:`~prunekit.plugins.data.token_units`) adds bits per
    byte and word perplexity."""
    import torch

    stride = window_stride(length, stride)
    starts, skips = scored_windows(len(stream), length, stride, windows_count)
    device = execution_device(model)
    total, scored, scored_bytes, scored_words = 0.0, 0, 0, 0
    with torch.inference_mode():
        for first in track(range(0, len(starts), batch_size), "perplexity", total=math.ceil(len(starts) / batch_size)):
            batch = range(first, min(first + batch_size, len(starts)))
            tokens = torch.stack([stream[starts[i] : starts[i] + length] for i in batch])
            targets = tokens.clone()
            for row, i in enumerate(batch):  # what an earlier window scored is context here
                targets[row, : skips[i]] = IGNORE
            ids = torch.cat([torch.full((len(batch), 1), prefix, dtype=tokens.dtype), tokens], dim=1).to(device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(device), ignore_index=IGNORE,
                reduction="sum",
            ).item()
            kept = targets != IGNORE
            scored += int(kept.sum())
            if units is not None:
                counts = torch.stack([units[starts[i] : starts[i] + length] for i in batch])[kept]
                scored_bytes += int(counts[:, 0].sum())
                scored_words += int(counts[:, 1].sum())
    loss = total / scored
    return Perplexity(math.exp(loss), loss, scored, len(starts), length, stride,
                      None if units is None else scored_bytes, None if units is None else scored_words)


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
    count = options.windows
    if options.sample and (options.stride is not None or count is None):
        raise UsageError("options.perplexity.sample draws a number of windows (windows) and takes no stride")
    prefix = prefix_token(request.tokenizer)
    source = options.source or default_source()
    stream = token_stream(request.tokenizer, source, split=options.split, text_field=options.text_field)
    units = token_units(request.tokenizer, source, split=options.split, text_field=options.text_field)
    if options.sample:  # the drawn windows, end to end: ``measure`` cuts them apart again
        seed = request.config.seed
        stream = sample_windows(stream, length, count, seed).reshape(-1)
        units = None if units is None else sample_windows(units, length, count, seed).reshape(-1, 2)
    result = measure(request.model, stream, prefix=prefix, length=length, stride=stride, windows_count=count,
                     batch_size=options.batch_size, units=units)
    details = {
        "source": source,
        "split": options.split,
        "windows": result.windows,
        "length": result.length,
        "stride": result.stride,
        "prefix_token": prefix,
        "tokens_scored": result.tokens,
        "bytes_scored": result.bytes,
        "words_scored": result.words,
        "batch_size": options.batch_size,
    }
    if options.sample:
        details["sample_seed"] = request.config.seed
    if units is None:
        log.warning("bits per byte and word perplexity skipped: a slow tokenizer gives no character offsets")
    return Metrics(perplexity=result.perplexity, loss=result.loss, bits_per_byte=result.bits_per_byte,
                   word_perplexity=result.word_perplexity, details={NAME: details})


def execution_device(model: PreTrainedModel):
    """Where the model's inputs go: its first weight's device, or, for a model accelerate placed with offloading
    (``core eval --offload``), its main device (the first GPU it uses, else the CPU), where offloaded layers run."""
    import torch

    placed = getattr(model, "hf_device_map", None)
    if placed:
        used = [device for device in placed.values() if device not in ("cpu", "disk")]
        return torch.device(used[0] if used else "cpu")
    return next(model.parameters()).device
