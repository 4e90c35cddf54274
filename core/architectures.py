"""Architecture adapters: where a model family keeps the parts that slicing touches.

The core knows no family by name: ``register_architectures`` hands over the adapters plugins write for a family, and
for a model none of them claims ``derive_architecture`` asks the plugins to derive one from the model itself (the
built-in ``discovery`` does). :class:`Architecture` is the interface every adapter implements and pruners call; the
module surgery an adapter's ``slice`` is made of is the plugins' to share (docs/api.md).
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from prunekit.errors import UsageError
from prunekit.payloads import Dimension

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel

__all__ = ["Architecture", "LAYER_UNITS_KEY"]

LAYER_UNITS_KEY = "prunekit_layer_units"
"""Config attribute holding per-layer unit counts when layers differ in size (not a stock config)."""


class Architecture(ABC):
    """What the core and the pruners need to know about one model family."""

    family: str
    """A short family name users see, e.g. ``llama``."""
    model_types: tuple[str, ...]
    """The ``config.model_type`` values this adapter handles."""
    dimensions: frozenset[Dimension]
    """Dimensions that can be sliced while the checkpoint stays a stock architecture."""
    lora_targets: tuple[str, ...]
    """Names of the linear modules a LoRA adapter should wrap (peft's ``target_modules``)."""
    reasons: Mapping[Dimension, str] = MappingProxyType({})
    """Why a dimension the family has is not offered, in words, for the error that refuses it."""

    def require(self, dimension: Dimension) -> None:
        """Refuse ``dimension`` with one line, and the reason where the adapter knows it, unless it can be sliced into
        a stock checkpoint."""
        if dimension not in self.dimensions:
            reason = self.reasons.get(dimension)
            raise UsageError(f"{self.family} models cannot be sliced along {dimension.value} into a stock "
                             f"checkpoint{': ' + reason if reason else ''}")

    @abstractmethod
    def layers(self, model: PreTrainedModel) -> nn.ModuleList:
        """The decoder layers, in order."""

    @abstractmethod
    def units(self, layer: nn.Module, dimension: Dimension) -> int:
        """How many units of ``dimension`` the layer has now (FFN channels, KV groups; 1 for layers)."""

    @abstractmethod
    def ffn_input_weight(self, layer: nn.Module) -> torch.Tensor:
        """The FFN input projection as ``[channels, hidden]`` (gate_proj, or fc1; GPT-2's Conv1D transposed), the
        matrix weight-only pruners such as PruneNet score."""

    @abstractmethod
    def output_projection(self, layer: nn.Module, dimension: Dimension) -> nn.Module:
        """The module whose *input* features are the units of ``dimension`` (down_proj / fc2 for FFN channels, o_proj
        for heads). Zeroing its input columns removes those units' effect; activation-aware pruners hook its input."""

    @abstractmethod
    def slice(self, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
        """Keep only the units at the sorted indices ``keep`` of ``dimension``, in place."""

    @abstractmethod
    def sync_config(self, model: PreTrainedModel) -> bool:
        """Rewrite the config fields of the sliced dimensions from the modules' actual shapes; ``False`` when layers
        differ in size, which no stock config can express."""

    @abstractmethod
    def drop_layers(self, model: PreTrainedModel, keep: list[int]) -> None:
        """Keep only the decoder layers at the sorted indices ``keep`` and rewrite the config."""


_DERIVED: weakref.WeakKeyDictionary[PreTrainedModel, Architecture] = weakref.WeakKeyDictionary()


def resolve(model: PreTrainedModel, adapters: list[Architecture],
            derive: Callable[[PreTrainedModel], Architecture | None]) -> Architecture:
    """The registered adapter for ``model``'s family, else the one ``derive`` finds from the model itself (once per
    model object: deriving replays layers), else a one-line :class:`UsageError` naming the model type."""
    model_type = getattr(model.config, "model_type", None)
    for adapter in adapters:
        if model_type in adapter.model_types:
            return adapter
    if model not in _DERIVED:
        derived = derive(model)
        if derived is None:
            raise UsageError(f"cannot slice {model_type or type(model).__name__!r} models: no registered adapter "
                             "claims them and no installed plugin derives one")
        _DERIVED[model] = derived
    return _DERIVED[model]
