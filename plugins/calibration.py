"""Calibration for data-aware pruners: which text, how many samples, and running it layer by layer.

Calibration-based pruners (``activation``, ``slicegpt``) look at the activations a model produces
on a little real text. This module holds what they share:

- :class:`CalibrationOptions`, the settings each of them inherits (source, count, length, seed,
  batch size), validated by pydantic like every plugin's options;
- :func:`calibration_samples`, fixed-length token windows cut at seeded random offsets from a
  source read by :mod:`prunekit.data` (a local text / JSON / JSONL file or folder, or a Hub dataset;
  tokenized once and cached);
- :func:`capture_inputs` and :func:`LayerInputs.layer_kwargs`, which let a pruner run the model
  one decoder layer at a time, so memory stays near one layer's activations beyond the model.

Defaults. The papers calibrate on 128 (Wanda, SliceGPT's code) to 1024 (SliceGPT's paper, FLAP)
WikiText-2 or C4 samples of 2048 tokens (FLAP: 128). On a CUDA device prunekit uses 128 x 2048.
On a CPU that is hours of forward passes even for a 135M model, so the CPU default is scaled down
to 32 x 512 (16k tokens, still 28 samples per hidden dimension of SmolLM2); set ``count`` and
``length`` to reproduce the papers' settings. The default text is the second half of WikiText-2's
test file in the shared benchmark folder (``wikitext2.test.raw[50%:]``), disjoint from the first
half that perplexity is measured on; without that folder it is WikiText-2's train split from the
Hub.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit import data
from prunekit.errors import UsageError

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.hooks import RemovableHandle
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HUB_SOURCE = "Salesforce/wikitext:wikitext-2-raw-v1"
GPU_DEFAULTS = (128, 2048)
CPU_DEFAULTS = (32, 512)


class CalibrationOptions(BaseModel):
    """Calibration settings; a calibrating plugin's options model inherits these fields."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        default=None,
        description="Text to calibrate on: a local .txt/.raw/.json/.jsonl file or folder, or a Hub "
        "dataset name[:config], optionally with a token range such as [50%:]. Default: "
        f"{data.SHARED_TEXT}{data.TRAINING_HALF} from the shared data folder, else {HUB_SOURCE}.",
    )
    text_field: str = Field(default="text", description="The text field of JSON / Hub records.")
    split: str = Field(default="train", description="The split of a Hub dataset.")
    count: int | None = Field(
        default=None, gt=0, description="Calibration samples (default 128 on CUDA, 32 on CPU)."
    )
    length: int | None = Field(
        default=None, gt=0, description="Tokens per sample (default 2048 on CUDA, 512 on CPU)."
    )
    seed: int | None = Field(default=None, description="Seed of the sample offsets (default: the run's seed).")
    batch_size: int = Field(default=8, gt=0, description="Samples per forward pass.")

    @field_validator("source")
    @classmethod
    def _local_source_exists(cls, source: str | None) -> str | None:
        return data.check_local_source(source)


@dataclass(frozen=True)
class Calibration:
    """The settings actually used, after defaults were resolved, as the run report records them."""

    source: str
    count: int
    length: int
    seed: int

    def report(self) -> dict[str, Any]:
        return {"source": self.source, "samples": self.count, "length": self.length, "seed": self.seed,
                "tokens": self.count * self.length}


def default_source() -> str:
    """The half of the shared WikiText-2 file that perplexity does not read, else the Hub's."""
    return data.shared_text(data.TRAINING_HALF) or HUB_SOURCE


def resolve(options: CalibrationOptions, model: PreTrainedModel, run_seed: int) -> Calibration:
    """Fill the device-dependent defaults and check the sample length against the model."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    count, length = GPU_DEFAULTS if on_gpu else CPU_DEFAULTS
    length = options.length or length
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        if options.length is not None:
            raise UsageError(f"calibration length {length} exceeds the model's {limit} positions")
        length = limit
    return Calibration(
        source=options.source or default_source(),
        count=options.count or count,
        length=length,
        seed=run_seed if options.seed is None else options.seed,
    )


def calibration_samples(
    tokenizer: PreTrainedTokenizerBase | None, options: CalibrationOptions, calibration: Calibration
) -> torch.Tensor:
    """``[count, length]`` token ids: windows of the source at seeded random offsets."""
    if tokenizer is None:
        raise UsageError("calibration needs the model's tokenizer, and this model has none")
    stream = data.token_stream(tokenizer, calibration.source, split=options.split, text_field=options.text_field)
    return data.sample_windows(stream, calibration.length, calibration.count, calibration.seed)


def by_keyword(layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A layer's arguments after the hidden states, all by keyword (GPT-2 passes some by position)."""
    if not args:
        return kwargs
    signature = inspect.signature(type(layer).forward)
    bound = signature.bind(layer, None, *args, **kwargs).arguments
    named: dict[str, Any] = {}
    for name, value in list(bound.items())[2:]:  # after self and the hidden states
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
            raise RuntimeError(f"{type(layer).__name__} takes extra positional arguments; cannot replay them")
        else:
            named[name] = value
    return named


class _Captured(Exception):
    """Raised by the last layer's stand-in once every layer's arguments are recorded."""


@dataclass
class LayerInputs:
    """What the first decoder layer receives for each calibration batch, and the keyword
    arguments (attention mask, rotary embeddings, ...) every layer receives for a batch shape.

    ``hidden`` is the running activation: a pruner replaces each entry with the layer's output as
    it moves down the model, so only one layer's activations are held at a time.
    """

    hidden: list[torch.Tensor]
    kwargs: dict[tuple[int, ...], list[dict[str, Any]]]

    def layer_kwargs(self, layer_index: int, batch: torch.Tensor) -> dict[str, Any]:
        return self.kwargs[tuple(batch.shape[:2])][layer_index]

    def batches(self, layer_index: int) -> Iterator[tuple[int, torch.Tensor, dict[str, Any]]]:
        """``(position, hidden, kwargs)`` for every batch at ``layer_index``."""
        for position, hidden in enumerate(self.hidden):
            yield position, hidden, self.layer_kwargs(layer_index, hidden)

    def advance(self, layer_index: int, layer: nn.Module, handles: list[RemovableHandle]) -> None:
        """Run ``layer`` on every batch, each output replacing its input, then remove ``handles``
        (the hooks through which a pruner watched the layer run), even if a batch fails."""
        try:
            for position, hidden, kwargs in self.batches(layer_index):
                self.hidden[position] = layer(hidden, **kwargs)
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def capture_inputs(model: PreTrainedModel, layers: nn.ModuleList, samples: torch.Tensor, batch_size: int) -> LayerInputs:
    """Run ``samples`` through the model with every decoder layer replaced by a recorder.

    Each recorder keeps the keyword arguments its layer would get and passes the hidden states
    through untouched; the last one stops the forward pass, so the final norm and the LM head
    (the largest activation of all, ``tokens x vocab``) never run. The model's own forward builds
    the masks and position embeddings, so every family and attention implementation is handled
    the way transformers handles it. The model is left exactly as it was.
    """
    device = next(model.parameters()).device
    inputs = LayerInputs(hidden=[], kwargs={})
    for batch in samples.split(batch_size):
        calls: list[tuple[torch.Tensor, dict[str, Any]]] = []

        def recorder(index: int):
            def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
                hidden = args[0] if args else kwargs.pop("hidden_states")
                calls.append((hidden, by_keyword(layers[index], args[1:], kwargs)))
                if index == len(layers) - 1:
                    raise _Captured
                return hidden
            return forward

        for index, layer in enumerate(layers):
            layer.forward = recorder(index)
        try:
            model(input_ids=batch.to(device), use_cache=False)
        except _Captured:
            pass
        finally:
            for layer in layers:
                del layer.forward
        if len(calls) != len(layers):
            raise RuntimeError(f"the model called {len(calls)} of its {len(layers)} decoder layers")
        inputs.hidden.append(calls[0][0])
        inputs.kwargs.setdefault(tuple(batch.shape), [kwargs for _, kwargs in calls])
    return inputs
