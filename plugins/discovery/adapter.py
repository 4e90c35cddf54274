"""The adapter the derived architectures are: a decoder-only layout described by module paths.

:mod:`.derive` finds the paths from a model's structure; :class:`DecoderArchitecture` then slices
through them with the core's module surgery (:mod:`prunekit.architectures`). It lives here, with
the derivation, because nothing else builds one: a plugin that registers a hand-written adapter
implements :class:`~prunekit.architectures.Architecture` itself.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prunekit.architectures import LAYER_UNITS_KEY, Architecture
from prunekit.errors import UsageError
from prunekit.payloads import Dimension
from prunekit.plugins.surgery import head_rows, input_weight_columns, keep_inputs, keep_outputs

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


def out_features(module: nn.Module) -> int:
    """The output width of a Linear or Conv1D."""
    return module.nf if isinstance(module, Conv1D) else module.out_features


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
