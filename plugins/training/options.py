"""The settings every training recovery has (``lora``'s and ``distill``'s), and their device defaults.

Each plugin's options class extends :class:`TrainingOptions` with its own (rank, temperature, a
length of training); what both read the same way is here once: the batch, the sequence length
and its CUDA / CPU defaults, the schedule's warm-up, the held-out evaluations and early stopping,
the training text and the seed. Light to import: the plugins load it when they register.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit.errors import UsageError
from prunekit.plugins import data

GPU_LENGTH, CPU_LENGTH = 1024, 256
GPU_EVAL_SEQUENCES, CPU_EVAL_SEQUENCES = 16, 8


class TrainingOptions(BaseModel):
    """The shared settings; ``None`` means "the device's default"."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=3, gt=0, description="Sequences per optimizer step.")
    sequence_length: int | None = Field(
        default=None, gt=1, description=f"Tokens per sequence (default {GPU_LENGTH} on CUDA, {CPU_LENGTH} on CPU)."
    )
    warmup: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the steps over which the learning rate rises linearly."
    )
    eval_every: int | None = Field(
        default=None, gt=0,
        description="Steps between held-out evaluations, each also a resumable checkpoint "
        "(default: a fifth of the training).",
    )
    eval_sequences: int | None = Field(
        default=None, gt=0,
        description=f"Held-out sequences for the evaluations, cut from the end of the training text "
        f"(default {GPU_EVAL_SEQUENCES} on CUDA, {CPU_EVAL_SEQUENCES} on CPU).",
    )
    patience: int | None = Field(
        default=2, gt=0, description="Stop after this many evaluations without a lower eval loss; null disables."
    )
    data: str | None = Field(
        default=None,
        description="Training text: a local .txt/.raw/.json/.jsonl file or folder, or a Hub dataset "
        "name[:config], optionally with a token range such as [50%:]. Default: the openstax excerpts "
        "shipped with prunekit (perplexity reads WikiText-2, which they share no 13-gram with).",
    )
    text_field: str = Field(default="text", description="The text field of JSON / Hub records.")
    split: str = Field(default="train", description="The split of a Hub dataset.")
    seed: int | None = Field(
        default=None, description="Seed of the data order (and of adapter init and dropout); default --seed."
    )

    @field_validator("data")
    @classmethod
    def _local_text_exists(cls, value: str | None) -> str | None:
        return data.check_local_source(value)


def eval_sequences(options: TrainingOptions, *, on_gpu: bool) -> int:
    return options.eval_sequences or (GPU_EVAL_SEQUENCES if on_gpu else CPU_EVAL_SEQUENCES)


def sequence_length(options: TrainingOptions, plugin: str, *, on_gpu: bool, max_positions: int | None) -> int:
    """The training sequence length: the option, else the device's default capped at the model's
    positions (an explicit length beyond them is bad input, named by ``plugin``)."""
    length = options.sequence_length or (GPU_LENGTH if on_gpu else CPU_LENGTH)
    if max_positions is not None and length > max_positions:
        if options.sequence_length is not None:
            raise UsageError(f"{plugin}: sequence_length {length} exceeds the model's {max_positions} positions")
        length = max_positions
    return length
