"""Architecture adapters: where a model family keeps the parts that slicing touches.

Adapters arrive through the ``register_architectures`` hook, so the core knows no family by
name; the built-in ones live in :mod:`prunekit.plugins.architectures`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from prunekit.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel

    from prunekit.payloads import Dimension


class Architecture(ABC):
    """What the core and the pruners need to know about one model family."""

    family: str
    """A short family name users see, e.g. ``llama``."""
    model_types: tuple[str, ...]
    """The ``config.model_type`` values this adapter handles."""
    dimensions: frozenset[Dimension]
    """Dimensions that can be sliced while the checkpoint stays a stock architecture."""

    @abstractmethod
    def layers(self, model: PreTrainedModel) -> nn.ModuleList:
        """The decoder layers, in order."""

    @abstractmethod
    def units(self, layer: nn.Module, dimension: Dimension) -> int:
        """How many units of ``dimension`` the layer has now (FFN channels, or KV groups)."""

    @abstractmethod
    def ffn_input_weight(self, layer: nn.Module) -> torch.Tensor:
        """The FFN input projection as ``[channels, hidden]`` (gate_proj, or fc1; GPT-2's Conv1D
        transposed), the matrix weight-only pruners such as PruneNet score."""

    @abstractmethod
    def slice(self, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
        """Keep only the units at the sorted indices ``keep`` of ``dimension``, in place."""

    @abstractmethod
    def sync_config(self, model: PreTrainedModel) -> bool:
        """Rewrite the config fields of the sliced dimensions from the modules' actual shapes.

        Return ``False`` when layers differ in size, which no stock config can express."""


def resolve(model: PreTrainedModel, adapters: list[Architecture]) -> Architecture:
    """The adapter for ``model``, or a :class:`UsageError` naming the supported families."""
    model_type = getattr(model.config, "model_type", None)
    for adapter in adapters:
        if model_type in adapter.model_types:
            return adapter
    families = ", ".join(sorted({a.family for a in adapters})) or "none registered"
    raise UsageError(f"unsupported architecture {model_type!r}; supported families: {families}")
