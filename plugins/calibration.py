"""Calibration for data-aware pruners: which text, how many samples, and running it layer by layer.

Calibration-based pruners (``activation``, ``slicegpt``) look at the activations a model produces
on a little real text. This module holds what they share:

- :class:`CalibrationOptions`, the settings each of them inherits (source, count, length, seed,
  batch size), validated by pydantic like every plugin's options;
- :func:`calibration_samples`, fixed-length token windows cut at seeded random offsets from a
  source read by :mod:`prunekit.plugins.data` (a local text / JSON / JSONL file or folder, or a Hub dataset;
  tokenized once and cached);
- running the model one decoder layer at a time is :mod:`prunekit.plugins.layer_inputs`.

Defaults. The papers calibrate on 128 (Wanda, SliceGPT's code) to 1024 (SliceGPT's paper, FLAP)
WikiText-2 or C4 samples of 2048 tokens (FLAP: 128). On a CUDA device prunekit uses 128 x 2048.
On a CPU that is hours of forward passes even for a 135M model, so the CPU default is scaled down
to 32 x 512 (16k tokens, still 28 samples per hidden dimension of SmolLM2); set ``count`` and
``length`` to reproduce the papers' settings. The default text is the OpenStax excerpt shipped
with prunekit (:func:`prunekit.plugins.data.training_text`), not WikiText-2, which perplexity is
measured on: calibrating on the evaluation text's distribution flatters a pruner that fits it.
The report states the text, its tokens and its measured overlap with the evaluation text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit.plugins import data
from prunekit.errors import UsageError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GPU_DEFAULTS = (128, 2048)
CPU_DEFAULTS = (32, 512)


class CalibrationOptions(BaseModel):
    """Calibration settings; a calibrating plugin's options model inherits these fields."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        default=None,
        description="Text to calibrate on: a local .txt/.raw/.json/.jsonl file or folder, or a Hub "
        "dataset name[:config], optionally with a token range such as [50%:]. Default: "
        f"the {data.TRAINING_TEXT} excerpts shipped with prunekit.",
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
    split: str
    text_field: str

    def report(self) -> dict[str, Any]:
        return {**data.describe(self.source, self.count * self.length, split=self.split, text_field=self.text_field),
                "samples": self.count, "length": self.length, "seed": self.seed}


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
        source=options.source or data.training_text(),
        count=options.count or count,
        length=length,
        seed=run_seed if options.seed is None else options.seed,
        split=options.split,
        text_field=options.text_field,
    )


def calibration_samples(
    tokenizer: PreTrainedTokenizerBase | None, options: CalibrationOptions, calibration: Calibration
) -> torch.Tensor:
    """``[count, length]`` token ids: windows of the source at seeded random offsets."""
    if tokenizer is None:
        raise UsageError("calibration needs the model's tokenizer, and this model has none")
    stream = data.token_stream(tokenizer, calibration.source, split=options.split, text_field=options.text_field)
    return data.sample_windows(stream, calibration.length, calibration.count, calibration.seed)
