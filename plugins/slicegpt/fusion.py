"""Step 1 of SliceGPT: make every norm a plain, scale-free RMSNorm without changing the model's function.

Rotating the residual stream ``x -> x Q`` commutes with ``x / rms(x)`` (an orthogonal ``Q`` keeps
norms) but not with a per-coordinate scale ``gamma`` or a LayerNorm's mean subtraction. So before
any rotation:

- each norm's ``gamma`` (and a LayerNorm's ``beta``) is folded into the linear layers that read the
  norm: ``W <- W diag(gamma)``, ``b <- b + W beta`` (a bias is added where there was none);
- for LayerNorm families the stream is kept centred instead of centring it in every norm: each
  embedding row and each module writing into the stream has its mean over the hidden dimension
  subtracted, so the stream is a sum of zero-mean vectors and ``LayerNorm == RMSNorm`` on it; the
  LayerNorms are then replaced by ``torch.nn.RMSNorm``;
- a head tied to the embedding is untied first, because after folding the final norm into it the
  two matrices differ (``E Q`` versus ``E diag(gamma) Q``) -- unless the embeddings and the head
  keep their full width (``full_ends``), in which case the final norm is left as it is.

All arithmetic is in float64. ``tests/test_slicegpt.py`` checks that the logits do not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.plugins.slicegpt.layouts import Layout


def assign(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter (any shape), keeping its dtype and device."""
    old = getattr(module, name)
    reference = old if old is not None else module.weight
    setattr(module, name, nn.Parameter(value.to(reference.dtype).to(reference.device).contiguous(),
                                       requires_grad=reference.requires_grad))


def head_is_tied(model: PreTrainedModel, layout: Layout) -> bool:
    """Whether the head's weight is the token embedding's (transformers ties by sharing the parameter)."""
    return model.get_submodule(layout.head).weight is model.get_submodule(layout.embeddings[0]).weight


def untie_head(model: PreTrainedModel, layout: Layout) -> bool:
    """Give the head its own weight if it shares the token embedding's; ``True`` if it did."""
    head = model.get_submodule(layout.head)
    embedding = model.get_submodule(layout.embeddings[0])
    if not head_is_tied(model, layout):
        return False
    head.weight = nn.Parameter(embedding.weight.detach().clone(), requires_grad=embedding.weight.requires_grad)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    return True


def fold_norm(norm: nn.Module, readers: list[nn.Linear], added_biases: list[str], names: list[str]) -> None:
    """Fold ``gamma`` (and ``beta``) of ``norm`` into the linear layers that read its output."""
    gamma = getattr(norm, "weight", None)
    beta = getattr(norm, "bias", None)
    for linear, name in zip(readers, names):
        weight = linear.weight.detach().double()
        if beta is not None and bool(beta.detach().any()):
            shift = weight @ beta.detach().double()
            if linear.bias is None:
                linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype,
                                                       device=linear.weight.device))
                added_biases.append(name)
            assign(linear, "bias", linear.bias.detach().double() + shift)
        if gamma is not None:
            assign(linear, "weight", weight * gamma.detach().double())


def centre_writer(linear: nn.Linear) -> None:
    """Subtract the mean over the output (hidden) dimension from a module writing into the stream."""
    weight = linear.weight.detach().double()
    assign(linear, "weight", weight - weight.mean(dim=0, keepdim=True))
    if linear.bias is not None:
        bias = linear.bias.detach().double()
        assign(linear, "bias", bias - bias.mean())


def plain_norm(norm: nn.Module, like: torch.Tensor) -> nn.Module:
    """The scale-free RMSNorm that replaces ``norm`` once its scale and shift are folded away
    (a LayerNorm becomes ``torch.nn.RMSNorm`` with the same epsilon, on ``like``'s dtype and device)."""
    if isinstance(norm, nn.LayerNorm):
        return nn.RMSNorm(norm.normalized_shape, eps=norm.eps, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        norm.weight.fill_(1.0)
    return norm


def fuse(model: PreTrainedModel, layout: Layout, full_ends: bool = False) -> dict[str, object]:
    """Fold every norm of ``model`` into its readers, in place; the model computes the same function.

    With ``full_ends`` the embeddings, the final norm and the head will not be rotated, so the
    final norm keeps its scale and a tied head stays tied.
    Returns what the checkpoint format must record: whether the head was untied and which linear
    layers received a bias they did not have (full module names).
    """
    untied = False if full_ends else untie_head(model, layout)
    like = model.get_submodule(layout.embeddings[0]).weight
    added: list[str] = []
    for index, layer in enumerate(layout.layer_list(model)):
        prefix = f"{layout.layers}.{index}"
        for block in layout.blocks:
            norm = layer.get_submodule(block.norm)
            fold_norm(norm, [layer.get_submodule(p) for p in block.inputs], added,
                      [f"{prefix}.{p}" for p in block.inputs])
            layer.set_submodule(block.norm, plain_norm(norm, like))
            if layout.layernorm:
                for path in block.outputs:
                    centre_writer(layer.get_submodule(path))
    if not full_ends:
        final = model.get_submodule(layout.final_norm)
        fold_norm(final, [model.get_submodule(layout.head)], added, [layout.head])
        model.set_submodule(layout.final_norm, plain_norm(final, like))
    if layout.layernorm:
        for path in layout.embeddings:
            embedding = model.get_submodule(path)
            weight = embedding.weight.detach().double()
            assign(embedding, "weight", weight - weight.mean(dim=1, keepdim=True))
    return {"untied_head": untied, "added_biases": added}
