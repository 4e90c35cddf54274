"""Architecture adapters: where a model family keeps the parts that slicing touches.

Adapters arrive through the ``register_architectures`` hook, so the core knows no family by
name: plugins register the hand-written ones. A model whose family no
adapter claims gets one derived from its own structure (:mod:`prunekit.discovery`).
:class:`Architecture` is the interface every adapter implements; :class:`DecoderArchitecture`
implements it for the usual decoder-only layout from a few module paths, which is what both the
hand-written and the derived adapters are.
"""

from __future__ import annotations

import operator
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prunekit.errors import UsageError
from prunekit.payloads import Dimension

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "Architecture",
    "DecoderArchitecture",
    "AttentionLayout",
    "LAYER_UNITS_KEY",
    "keep_outputs",
    "keep_inputs",
    "input_weight_columns",
    "head_rows",
    "zero_removed_units",
]

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
        """Refuse ``dimension`` with one line, and the reason where the adapter knows it, unless
        it can be sliced into a stock checkpoint."""
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
        """The FFN input projection as ``[channels, hidden]`` (gate_proj, or fc1; GPT-2's Conv1D
        transposed), the matrix weight-only pruners such as PruneNet score."""

    @abstractmethod
    def output_projection(self, layer: nn.Module, dimension: Dimension) -> nn.Module:
        """The module whose *input* features are the units of ``dimension`` (down_proj / fc2 for
        FFN channels, o_proj for heads). Zeroing its input columns removes those units' effect;
        activation-aware pruners hook its input."""

    @abstractmethod
    def slice(self, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
        """Keep only the units at the sorted indices ``keep`` of ``dimension``, in place."""

    @abstractmethod
    def sync_config(self, model: PreTrainedModel) -> bool:
        """Rewrite the config fields of the sliced dimensions from the modules' actual shapes.

        Return ``False`` when layers differ in size, which no stock config can express."""

    @abstractmethod
    def drop_layers(self, model: PreTrainedModel, keep: list[int]) -> None:
        """Keep only the decoder layers at the sorted indices ``keep`` and rewrite the config."""


_DERIVED: weakref.WeakKeyDictionary[nn.Module, Architecture] = weakref.WeakKeyDictionary()


def resolve(model: PreTrainedModel, adapters: list[Architecture]) -> Architecture:
    """The registered adapter for ``model``'s family, else one derived from the model itself
    (once per model object: deriving replays layers), else a one-line :class:`UsageError` that
    says what could not be placed."""
    model_type = getattr(model.config, "model_type", None)
    for adapter in adapters:
        if model_type in adapter.model_types:
            return adapter
    if model not in _DERIVED:
        from prunekit.discovery import derive

        _DERIVED[model] = derive(model)
    return _DERIVED[model]


# --- in-place module surgery, shared by every adapter ---------------------------------------


def _replace(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Swap a parameter for a smaller one; the old storage is freed as soon as nothing holds it."""
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(tensor.contiguous(), requires_grad=old.requires_grad))


def _keep_features(module: nn.Module, keep: torch.Tensor, outputs: bool) -> torch.Tensor:
    """Keep the output (or input) features ``keep`` of a Linear or Conv1D's weight: a Linear's W
    is ``[out, in]``, a Conv1D's ``[in, out]``. Returns ``keep`` on the weight's device."""
    keep = keep.to(module.weight.device)
    conv = isinstance(module, Conv1D)
    _replace(module, "weight", module.weight.index_select(int(outputs == conv), keep))
    setattr(module, ("nf" if outputs else "nx") if conv else ("out_features" if outputs else "in_features"), len(keep))
    return keep


def keep_outputs(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep the output features ``keep`` of a Linear or Conv1D (rows of W, or columns of Conv1D's W)."""
    keep = _keep_features(module, keep, outputs=True)
    if module.bias is not None:
        _replace(module, "bias", module.bias.index_select(0, keep))


def keep_inputs(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep the input features ``keep`` of a Linear or Conv1D; its bias is untouched."""
    _keep_features(module, keep, outputs=False)


def out_features(module: nn.Module) -> int:
    return module.nf if isinstance(module, Conv1D) else module.out_features


def input_weight_columns(module: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in]`` whatever the module stores (a view of Conv1D's ``[in, out]``)."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def head_rows(groups: torch.Tensor, heads_per_group: int, head_dim: int) -> torch.Tensor:
    """Feature indices of whole heads: group ``g`` owns heads ``g*n .. g*n+n-1``, each ``head_dim`` wide.

    Under grouped-query attention query head ``h`` reads KV head ``h // n`` (transformers'
    ``repeat_kv``), so keeping KV group ``g`` means keeping its ``n`` query heads with it."""
    heads = (groups[:, None] * heads_per_group + torch.arange(heads_per_group)).reshape(-1)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


@torch.no_grad()
def zero_removed_units(architecture: Architecture, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
    """Zero the output projection's input features of the units not in ``keep``, in place.

    The layer then computes exactly what slicing it to ``keep`` should compute: the reference
    every exactness check (the derived adapter's replay, the tests) compares a slice with."""
    if dimension is Dimension.HEADS:
        _, per_group, head_dim = architecture.head_shape(layer)
        keep = head_rows(keep.cpu(), per_group, head_dim)
    weight = input_weight_columns(architecture.output_projection(layer, dimension))  # [out, in]
    removed = torch.ones(weight.shape[1], dtype=torch.bool)
    removed[keep.cpu()] = False
    weight[:, removed.to(weight.device)] = 0


@dataclass(frozen=True)
class AttentionLayout:
    """Module paths of separate q/k/v/output projections, relative to a decoder layer."""

    module: str
    """The attention module itself (it knows ``head_dim`` unless ``head_dim`` is given here)."""
    q: str
    k: str
    v: str
    out: str
    head_dim: int | None = None
    queries_per_group: int | None = None
    """Set when q, k and v are one fused projection (``q == k == v``) whose output rows are all
    query heads, then all key heads, then all value heads; the split needs the group size."""

    @property
    def fused(self) -> bool:
        return self.q == self.k == self.v


@dataclass(frozen=True)
class DecoderArchitecture(Architecture):
    """An adapter described by module paths, for decoder-only models with the usual layout.

    ``ffn_inputs`` are the projections whose output rows are FFN channels (gate and up, or fc1);
    the first is the matrix weight-only pruners score. With ``ffn_fused`` there is one input
    projection whose rows are the gate's channels, then the up projection's (Phi-3's
    ``gate_up_proj``), and the two halves are sliced alike. ``ffn_field`` is the config field
    holding the FFN width, times ``ffn_field_factor`` (2 where it counts a fused projection's
    whole output); ``None`` where no field does, and then FFN channels are not offered.
    ``attention`` is given only where removing heads keeps a stock config, i.e. where the model
    reads ``config.head_dim`` instead of deriving it from ``hidden_size / num_attention_heads``.
    Sizes are read from and written to the text config (``config.get_text_config()``), which is
    the config itself for a text-only model.
    """

    family: str
    model_types: tuple[str, ...]
    layers_path: str
    ffn_inputs: tuple[str, ...]
    ffn_output: str
    ffn_field: str | None
    lora_targets: tuple[str, ...]
    attention: AttentionLayout | None = None
    ffn_fused: bool = False
    ffn_field_factor: int = 1
    reasons: Mapping[Dimension, str] = field(default_factory=dict)
    dimensions: frozenset[Dimension] = field(init=False)

    def __post_init__(self) -> None:
        # whole layers go where they are alike: drop_layers keeps the config stock
        dims = set() if Dimension.LAYERS in self.reasons else {Dimension.LAYERS}
        if self.ffn_field is not None and Dimension.FFN not in self.reasons:
            dims.add(Dimension.FFN)
        if self.attention is not None and Dimension.HEADS not in self.reasons:
            dims.add(Dimension.HEADS)
        object.__setattr__(self, "dimensions", frozenset(dims))

    def layers(self, model: PreTrainedModel) -> nn.ModuleList:
        return operator.attrgetter(self.layers_path)(model)

    def _module(self, layer: nn.Module, path: str) -> nn.Module:
        return layer.get_submodule(path)

    def _attention(self, layer: nn.Module) -> AttentionLayout:
        if self.attention is None:
            raise UsageError(f"{self.family} models cannot drop attention heads into a stock checkpoint")
        return self.attention

    def head_shape(self, layer: nn.Module) -> tuple[int, int, int]:
        """(KV groups, query heads per group, head_dim) of the layer as it is now."""
        attn = self._attention(layer)
        head_dim = attn.head_dim or self._module(layer, attn.module).head_dim
        if attn.fused:
            per_group = attn.queries_per_group
            return out_features(self._module(layer, attn.q)) // head_dim // (per_group + 2), per_group, head_dim
        groups = out_features(self._module(layer, attn.k)) // head_dim
        queries = out_features(self._module(layer, attn.q)) // head_dim
        return groups, queries // groups, head_dim

    def units(self, layer: nn.Module, dimension: Dimension) -> int:
        if dimension is Dimension.FFN:
            return out_features(self._module(layer, self.ffn_inputs[0])) // (2 if self.ffn_fused else 1)
        if dimension is Dimension.HEADS:
            return self.head_shape(layer)[0]
        if dimension is Dimension.LAYERS:
            return 1  # a layer is one unit of depth: scored once, kept or dropped whole
        raise UsageError(f"{self.family} layers have no units of {dimension.value}")

    def ffn_input_weight(self, layer: nn.Module) -> torch.Tensor:
        weight = input_weight_columns(self._module(layer, self.ffn_inputs[0]))
        return weight[: self.units(layer, Dimension.FFN)]  # a fused projection's gate half

    def output_projection(self, layer: nn.Module, dimension: Dimension) -> nn.Module:
        if dimension is Dimension.FFN:
            return self._module(layer, self.ffn_output)
        return self._module(layer, self._attention(layer).out)

    def slice(self, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
        if dimension is Dimension.FFN:
            rows = torch.cat([keep, keep + self.units(layer, dimension)]) if self.ffn_fused else keep
            for path in self.ffn_inputs:
                keep_outputs(self._module(layer, path), rows)
            keep_inputs(self._module(layer, self.ffn_output), keep)
        elif dimension is Dimension.HEADS:
            attn = self._attention(layer)
            groups, per_group, head_dim = self.head_shape(layer)
            query_rows = head_rows(keep.cpu(), per_group, head_dim)
            kv_rows = head_rows(keep.cpu(), 1, head_dim)
            if attn.fused:  # all queries, then all keys, then all values
                queries, keys = groups * per_group * head_dim, groups * head_dim
                keep_outputs(self._module(layer, attn.q), torch.cat([query_rows, queries + kv_rows,
                                                                    queries + keys + kv_rows]))
            else:
                keep_outputs(self._module(layer, attn.q), query_rows)
                keep_outputs(self._module(layer, attn.k), kv_rows)
                keep_outputs(self._module(layer, attn.v), kv_rows)
            keep_inputs(self._module(layer, attn.out), query_rows)
        else:
            raise UsageError(f"{self.family} layers cannot be sliced along {dimension.value}")

    def sync_config(self, model: PreTrainedModel) -> bool:
        layers = list(self.layers(model))
        config = model.config.get_text_config()
        per_layer: dict[str, list[int]] = {}
        if Dimension.FFN in self.dimensions:
            ffn = [self.units(layer, Dimension.FFN) for layer in layers]
            if len(set(ffn)) == 1:
                setattr(config, self.ffn_field, ffn[0] * self.ffn_field_factor)
            else:
                per_layer[Dimension.FFN.value] = ffn
        if Dimension.HEADS in self.dimensions:
            shapes = [self.head_shape(layer) for layer in layers]
            groups = [g for g, _, _ in shapes]
            _, per_group, head_dim = shapes[0]
            config.head_dim = head_dim  # explicit, so it is not re-derived from hidden / heads
            if len(set(groups)) == 1:
                if hasattr(config, "num_key_value_heads"):
                    config.num_key_value_heads = groups[0]
                config.num_attention_heads = groups[0] * per_group
            else:
                per_layer[Dimension.HEADS.value] = groups
        if per_layer:  # on the top-level config, where prunekit.load looks for it
            setattr(model.config, LAYER_UNITS_KEY, per_layer)
        elif hasattr(model.config, LAYER_UNITS_KEY):
            delattr(model.config, LAYER_UNITS_KEY)
        return not per_layer

    def drop_layers(self, model: PreTrainedModel, keep: list[int]) -> None:
        layers = self.layers(model)
        kept = nn.ModuleList(layers[i] for i in keep)
        for new_index, layer in enumerate(kept):
            renumber(layer, new_index)
        parent, _, name = self.layers_path.rpartition(".")
        setattr(operator.attrgetter(parent)(model) if parent else model, name, kept)
        keep_layers_in_config(model.config.get_text_config(), keep)


LAYER_INDEX_ATTRIBUTES = ("layer_idx", "layer_id")
"""What transformers' modules call their layer's position (GPT-Neo: ``layer_id``); the KV cache is
indexed by it, so a layer that moves must be told."""


def renumber(layer: nn.Module, index: int) -> None:
    """Tell every module of ``layer`` that it now sits at position ``index``."""
    for module in layer.modules():
        for name in LAYER_INDEX_ATTRIBUTES:
            if isinstance(getattr(module, name, None), int):
                setattr(module, name, index)


def keep_layers_in_config(config: PretrainedConfig, keep: list[int]) -> None:
    """Rewrite a text config for the decoder layers ``keep``: their number, and every per-layer list
    (``layer_types``, and any other field listing one value per layer) cut to the kept entries."""
    count = config.num_hidden_layers
    for name, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == count and name != "architectures":
            setattr(config, name, [value[i] for i in keep])
    config.num_hidden_layers = len(keep)
