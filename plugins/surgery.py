"""In-place module surgery for architecture adapters and pruners: what an adapter's ``slice`` is made of.

Kept in one place so that every adapter (the derived one of :mod:`prunekit.plugins.discovery`, a plugin's
hand-written one) slices a Linear or GPT-2's transposed ``Conv1D`` alike, and every pruner that reads a weight as
``[out, in]`` reads it the same way. :func:`zero_removed_units` is the reference a slice is checked against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prunekit.payloads import Dimension

if TYPE_CHECKING:
    from prunekit.architectures import Architecture

__all__ = ["keep_outputs", "keep_inputs", "input_weight_columns", "head_rows", "zero_removed_units", "is_int"]


def is_int(value: object) -> bool:
    """An integer config value (``True`` is not a size): what a size read from a config must be."""
    return isinstance(value, int) and not isinstance(value, bool)


def _replace(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Swap a parameter for a smaller one; the old storage is freed as soon as nothing holds it."""
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(tensor.contiguous(), requires_grad=old.requires_grad))


def _keep_features(module: nn.Module, keep: torch.Tensor, outputs: bool) -> torch.Tensor:
    """Keep the output (or input) features ``keep`` of a Linear or Conv1D's weight: a Linear's W is
    ``[out, in]``, a Conv1D's ``[in, out]``. Returns ``keep`` on the weight's device."""
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


def input_weight_columns(module: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in]`` whatever the module stores (a view of Conv1D's ``[in, out]``)."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def head_rows(groups: torch.Tensor, heads_per_group: int, head_dim: int) -> torch.Tensor:
    """Feature indices of whole heads: group ``g`` owns heads ``g*n .. g*n+n-1``, each ``head_dim`` wide.

    Under grouped-query attention query head ``h`` reads KV head ``h // n`` (transformers' ``repeat_kv``), so
    keeping KV group ``g`` means keeping its ``n`` query heads with it."""
    heads = (groups[:, None] * heads_per_group + torch.arange(heads_per_group)).reshape(-1)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


@torch.no_grad()
def zero_removed_units(architecture: Architecture, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
    """Zero the output projection's input features of the units not in ``keep``, in place: the layer then
    computes exactly what slicing it to ``keep`` should, the reference every exactness check (the derived
    adapter's replay, the tests) compares a slice with."""
    if dimension is Dimension.HEADS:
        _, per_group, head_dim = architecture.head_shape(layer)
        keep = head_rows(keep.cpu(), per_group, head_dim)
    weight = input_weight_columns(architecture.output_projection(layer, dimension))  # [out, in]
    removed = torch.ones(weight.shape[1], dtype=torch.bool)
    removed[keep.cpu()] = False
    weight[:, removed.to(weight.device)] = 0
