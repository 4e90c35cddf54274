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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit.errors import UsageError
from prunekit.plugins import data

GPU_LENGTH, CPU_LENGTH = 1024, 256
CPU_TOKENS = 61_440
"""The CPU budget: 80 steps of 3 x 256 tokens, 514 s for SmolLM2-135M on two idle cores."""
LEARNING_RATE, LORA_LEARNING_RATE = 3e-4, 1e-3
GPU_EVAL_SEQUENCES, CPU_EVAL_SEQUENCES = 16, 8


class DistillOptions(BaseModel):
    """Every setting of the ``distill`` plugin; ``None`` means "the device's default" (see module doc)."""

    model_config = ConfigDict(extra="forbid")

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
        description=f"Held-out sequences for the eval KL and perplexity, cut from the end of the training text "
        f"(default {GPU_EVAL_SEQUENCES} on CUDA, {CPU_EVAL_SEQUENCES} on CPU).",
    )
    patience: int | None = Field(
        default=2, gt=0, description="Stop after this many evaluations without a lower eval loss; null disables."
    )
    teacher_offload: str | None = Field(
        default=None,
        description="Place the teacher with accelerate (device_map=auto): the GPUs, then teacher_memory of CPU "
        "memory, then this folder on disk, for a teacher that does not fit beside the student. Slow.",
    )
    teacher_memory: str = Field(default="2GiB", description="CPU memory for the teacher's weights with teacher_offload.")
    data: str | None = Field(
        default=None,
        description="Training text: a local .txt/.raw/.json/.jsonl file or folder, or a Hub dataset "
        "name[:config], optionally with a token range such as [50%:]. Default: the openstax excerpts "
        "shipped with prunekit (perplexity reads WikiText-2, which they share no 13-gram with).",
    )
    text_field: str = Field(default="text", description="The text field of JSON / Hub records.")
    split: str = Field(default="train", description="The split of a Hub dataset.")
    seed: int | None = Field(default=None, description="Seed of data order and adapter init; default --seed.")

    @field_validator("data")
    @classmethod
    def _local_text_exists(cls, value: str | None) -> str | None:
        return data.check_local_source(value)


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


def eval_sequences(options: DistillOptions, *, on_gpu: bool) -> int:
    return options.eval_sequences or (GPU_EVAL_SEQUENCES if on_gpu else CPU_EVAL_SEQUENCES)


def sequence_length(options: DistillOptions, *, on_gpu: bool, max_positions: int | None) -> int:
    """The training sequence length: the option, else the device's default capped at the model's
    positions (an explicit length beyond them is bad input)."""
    length = options.sequence_length or (GPU_LENGTH if on_gpu else CPU_LENGTH)
    if max_positions is not None and length > max_positions:
        if options.sequence_length is not None:
            raise UsageError(f"distill: sequence_length {length} exceeds the model's {max_positions} positions")
        length = max_positions
    return length


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
        eval_sequences=eval_sequences(options, on_gpu=on_gpu),
        patience=options.patience,
        data=source,
        text_field=options.text_field,
        split=options.split,
        seed=run_seed if options.seed is None else options.seed,
    )
