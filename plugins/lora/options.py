"""LoRA recovery settings (``options: {lora: {...}}``, or ``-o lora.KEY=VALUE`` on the CLI).

The recipe of SliceGPT and PruneNet (algorithms.md §4) is the default where it does not depend
on the machine: rank 32, alpha 10, dropout 0.05 on every linear layer of the decoder, AdamW,
linear schedule with warm-up, early stopping on the held-out loss. What does depend on it is
scaled: on a CUDA device a run trains one epoch of 1024-token sequences (the paper's length); on
a CPU, where one optimizer step of 3 x 256 tokens takes several seconds even for a 135M model,
it trains a fixed 40 steps of 256-token sequences, and uses a higher learning rate (1e-3, see
docs/recovery.md for the measurement) so that those few steps recover what they can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunekit.errors import UsageError
from prunekit.plugins import data

if TYPE_CHECKING:
    from prunekit.plugins.training.adapters import Adapter

GPU_LENGTH, CPU_LENGTH = 1024, 256
GPU_LEARNING_RATE, CPU_LEARNING_RATE = 2e-4, 1e-3
CPU_STEPS = 40
GPU_EVAL_SEQUENCES, CPU_EVAL_SEQUENCES = 16, 8


class LoraOptions(BaseModel):
    """Every setting of the ``lora`` plugin; ``None`` means "the device's default" (see module doc)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=32, gt=0, description="LoRA rank r.")
    alpha: float = Field(default=10.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        default=None, min_length=1,
        description="Module names to adapt (peft's target_modules). Default: the architecture's "
        "lora_targets, every linear layer of the decoder layers.",
    )
    learning_rate: float | None = Field(
        default=None, gt=0, description=f"AdamW peak learning rate (default {GPU_LEARNING_RATE:g} on CUDA, "
        f"{CPU_LEARNING_RATE:g} on CPU)."
    )
    steps: int | None = Field(
        default=None, gt=0,
        description=f"Optimizer steps (default: one epoch on CUDA, {CPU_STEPS} on CPU). Excludes epochs.",
    )
    epochs: float | None = Field(default=None, gt=0, description="Passes over the training text. Excludes steps.")
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
        description=f"Held-out sequences for the eval loss, cut from the end of the training text "
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
    seed: int | None = Field(default=None, description="Seed of adapter init, data order and dropout; default --seed.")
    save_adapter: bool = Field(
        default=False,
        description="Keep the trained adapter alone (peft format) in the run's adapter/, beside the merged model.",
    )

    @field_validator("data")
    @classmethod
    def _local_text_exists(cls, value: str | None) -> str | None:
        return data.check_local_source(value)

    @model_validator(mode="after")
    def _one_length_of_training(self) -> LoraOptions:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        return self


@dataclass(frozen=True)
class Settings:
    """The options with the device's defaults filled in: what training actually used."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    learning_rate: float
    steps: int
    batch_size: int
    sequence_length: int
    warmup: float
    eval_every: int
    eval_sequences: int
    patience: int | None
    data: str
    text_field: str
    split: str
    seed: int

    @property
    def adapter(self) -> Adapter:
        from prunekit.plugins.training.adapters import Adapter  # peft: imported when recovery runs

        return Adapter(self.rank, self.alpha, self.dropout, self.target_modules)

    def identity(self) -> dict[str, Any]:
        """Everything a checkpoint depends on: a resumed run must match it exactly."""
        fields = dict(self.__dict__)
        fields["target_modules"] = list(self.target_modules)
        return fields


def eval_sequences(options: LoraOptions, *, on_gpu: bool) -> int:
    return options.eval_sequences or (GPU_EVAL_SEQUENCES if on_gpu else CPU_EVAL_SEQUENCES)


def sequence_length(options: LoraOptions, *, on_gpu: bool, max_positions: int | None) -> int:
    """The training sequence length: the option, else the device's default capped at the model's
    positions (an explicit length beyond them is bad input)."""
    length = options.sequence_length or (GPU_LENGTH if on_gpu else CPU_LENGTH)
    if max_positions is not None and length > max_positions:
        if options.sequence_length is not None:
            raise UsageError(f"lora: sequence_length {length} exceeds the model's {max_positions} positions")
        length = max_positions
    return length


def resolve(options: LoraOptions, *, on_gpu: bool, length: int, targets: tuple[str, ...], source: str,
            train_sequences: int, run_seed: int) -> Settings:
    """Fill in the device's defaults; ``train_sequences`` turns epochs into optimizer steps the way
    ``Trainer`` counts them (the last, partial batch of an epoch is a step)."""
    per_epoch = math.ceil(train_sequences / options.batch_size)
    if options.steps is not None:
        steps = options.steps
    elif options.epochs is not None or on_gpu:
        steps = max(1, math.ceil((options.epochs or 1.0) * per_epoch))
    else:
        steps = CPU_STEPS
    eval_every = options.eval_every or max(1, steps // 5)
    if eval_every > steps:
        raise UsageError(f"lora: eval_every {eval_every} exceeds the {steps} training steps")
    return Settings(
        rank=options.rank,
        alpha=options.alpha,
        dropout=options.dropout,
        target_modules=tuple(options.target_modules or targets),
        learning_rate=options.learning_rate or (GPU_LEARNING_RATE if on_gpu else CPU_LEARNING_RATE),
        steps=steps,
        batch_size=options.batch_size,
        sequence_length=length,
        warmup=options.warmup,
        eval_every=eval_every,
        eval_sequences=eval_sequences(options, on_gpu=on_gpu),
        patience=options.patience,
        data=source,
        text_field=options.text_field,
        split=options.split,
        seed=run_seed if options.seed is None else options.seed,
    )
