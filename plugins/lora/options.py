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

from pydantic import Field, model_validator

from prunekit.errors import UsageError
from prunekit.plugins.training import options as training
from prunekit.plugins.training.options import TrainingOptions

if TYPE_CHECKING:
    from prunekit.plugins.training.adapters import Adapter

GPU_LEARNING_RATE, CPU_LEARNING_RATE = 2e-4, 1e-3
CPU_STEPS = 40


class LoraOptions(TrainingOptions):
    """Every setting of the ``lora`` plugin, beside the shared ones; ``None`` means "the device's default" (see
    module doc)."""

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
    save_adapter: bool = Field(
        default=False,
        description="Keep the trained adapter alone (peft format) in the run's adapter/, beside the merged model.",
    )

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
        eval_sequences=training.eval_sequences(options, on_gpu=on_gpu),
        patience=options.patience,
        data=source,
        text_field=options.text_field,
        split=options.split,
        seed=run_seed if options.seed is None else options.seed,
    )
