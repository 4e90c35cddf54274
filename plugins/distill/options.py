"""Distillation settings (``options: {distill: {...}}``, or ``-o distill.KEY=VALUE`` on the CLI).

The loss is Minitron's and Model-Optimizer's default: forward KL from the teacher's next-token
distribution to the student's at temperature 1, no cross-entropy term, every parameter trained.
How long it trains is a token budget (``tokens``), not a number of steps, so two recoveries can be
compared at equal tokens. What depends on the machine is scaled as ``lora`` scales it: on a CUDA
device one epoch of 1024-token sequences; on a CPU 256-token sequences and a budget that took
514 s for SmolLM2-135M on two idle cores (docs/recovery.md has the measurement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from prunekit.errors import UsageError
from prunekit.plugins.training import options as training
from prunekit.plugins.training.options import TrainingOptions

CPU_TOKENS = 61_440
"""The CPU budget: 80 steps of 3 x 256 tokens, 514 s for SmolLM2-135M on two idle cores."""
LEARNING_RATE, LORA_LEARNING_RATE = 3e-4, 1e-3


class DistillOptions(TrainingOptions):
    """Every setting of the ``distill`` plugin, beside the shared ones; ``None`` means "the device's default" (see
    module doc)."""

    temperature: float = Field(
        default=1.0, gt=0, description="Softmax temperature of both distributions; the KL is scaled by its square."
    )
    ce_weight: float = Field(
        default=0.0, ge=0, description="Weight of the cross-entropy on the text added to the KL (0: KL alone)."
    )
    top_k: int | None = Field(
        default=None, gt=0,
        description="Keep only the teacher's k largest logits, renormalized (a biased target; null: the full "
        "vocabulary).",
    )
    tokens: int | None = Field(
        default=None, gt=0,
        description=f"Training tokens (default: one epoch of the text on CUDA, {CPU_TOKENS:,} on CPU).",
    )
    lora: bool = Field(
        default=False,
        description="Train LoRA adapters (lora's defaults: rank 32, alpha 10, every linear layer of the decoder) "
        "and merge them, instead of every parameter.",
    )
    learning_rate: float | None = Field(
        default=None, gt=0,
        description=f"AdamW peak learning rate (default {LEARNING_RATE:g}, or {LORA_LEARNING_RATE:g} with lora).",
    )
    teacher_offload: str | None = Field(
        default=None,
        description="Place the teacher with accelerate (device_map=auto): the GPUs, then teacher_memory of CPU "
        "memory, then this folder on disk, for a teacher that does not fit beside the student. Slow.",
    )
    teacher_memory: str = Field(default="2GiB", description="CPU memory for the teacher's weights with teacher_offload.")


@dataclass(frozen=True)
class Settings:
    """The options with the device's defaults filled in: what training actually used."""

    temperature: float
    ce_weight: float
    top_k: int | None
    tokens: int
    lora: bool
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

    def identity(self) -> dict[str, Any]:
        """Everything a checkpoint depends on: a resumed run must match it exactly."""
        return dict(self.__dict__)


def resolve(options: DistillOptions, *, on_gpu: bool, length: int, source: str, train_sequences: int,
            vocabulary: int, run_seed: int) -> Settings:
    """Fill in the device's defaults. The token budget becomes optimizer steps of ``batch_size`` sequences (the last
    one whole, so ``tokens`` is a floor); a ``top_k`` as large as the vocabulary is the full distribution."""
    per_step = options.batch_size * length
    if options.tokens is not None:
        tokens = options.tokens
    elif on_gpu:
        tokens = train_sequences * length
    else:
        tokens = CPU_TOKENS
    steps = max(1, math.ceil(tokens / per_step))
    eval_every = options.eval_every or max(1, steps // 5)
    if eval_every > steps:
        raise UsageError(f"distill: eval_every {eval_every} exceeds the {steps} training steps")
    if options.top_k is not None and options.top_k > vocabulary:
        raise UsageError(f"distill: top_k {options.top_k} exceeds the model's {vocabulary} tokens")
    return Settings(
        temperature=options.temperature,
        ce_weight=options.ce_weight,
        top_k=options.top_k,
        tokens=steps * per_step,
        lora=options.lora,
        learning_rate=options.learning_rate or (LORA_LEARNING_RATE if options.lora else LEARNING_RATE),
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
