"""Putting LoRA adapters on a sliced model and merging them back into its weights, with peft.

Which modules get adapters comes from the architecture adapter (``lora_targets``: every linear
layer of the decoder layers, by the family's module names), so the core and this plugin know no
family by name. GPT-2 keeps its projections in ``Conv1D`` modules whose weight is stored
``[in, out]``; peft must be told (``fan_in_fan_out=True``) or it merges the transposed update.
That is detected from the modules themselves, not from the family.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from transformers import set_seed
from transformers.pytorch_utils import Conv1D

from prunekit.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Adapter:
    """What an adapter is made of (``lora``'s settings, or lora's defaults for ``distill`` with ``lora=true``)."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


def matching_modules(model: PreTrainedModel, config: LoraConfig) -> list[str]:
    """Names of the modules peft will wrap, by peft's own matching rule."""
    return [name for name, _ in model.named_modules() if name and check_target_module_exists(config, name)]


def lora_config(model: PreTrainedModel, settings: Adapter) -> LoraConfig:
    """peft's config for ``settings``; target names that match no module are bad input."""
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    names = matching_modules(model, config)
    if not names:
        raise UsageError(
            f"lora: no module of this {model.config.model_type} model is named "
            f"{', '.join(settings.target_modules)} (target_modules)"
        )
    config.fan_in_fan_out = any(isinstance(model.get_submodule(name), Conv1D) for name in names)
    return config


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 asks transformers 5 for ``is_gradient_checkpointing``, which warns that it is
    deprecated; the warning is about the two libraries, not about anything the user can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def attach(model: PreTrainedModel, config: LoraConfig, seed: int) -> PeftModel:
    """``model`` with fresh adapters (seeded), only the adapters trainable."""
    set_seed(seed)
    try:
        with _quiet_peft():
            return get_peft_model(model, config)
    except ValueError as exc:  # peft rejects module types it cannot adapt
        raise UsageError(f"lora: {' '.join(str(exc).split())}") from exc


def load(model: PreTrainedModel, directory: Path) -> PeftModel:
    """``model`` with the adapter saved in ``directory`` (peft's format) put back on."""
    with _quiet_peft():
        return PeftModel.from_pretrained(model, directory)


def merge(model: PeftModel) -> PreTrainedModel:
    """The base model with every adapter added into its weights and the LoRA modules removed.

    ``safe_merge`` checks each merged weight for NaN first, so a diverged adapter fails loudly
    instead of being saved."""
    merged = model.merge_and_unload(safe_merge=True)
    return merged.eval()
