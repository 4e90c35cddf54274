"""Steps 2-3 of SliceGPT: PCA of the signal entering each norm, then rotate and slice.

With every norm a scale-free RMSNorm (:mod:`.fusion`), the residual stream can be expressed in
any orthonormal basis ``Q``: modules reading the stream get ``W <- W Q``, modules writing into it
``W <- Q^T W``, embeddings ``E <- E Q``, and the model computes the same function. Choosing ``Q``
as the principal axes of the calibration signal (eigenvectors of ``X^T X`` in float64, with
``damping * mean(diag)`` added, sorted by eigenvalue) and keeping its first ``d'`` columns drops
the directions that carry the least signal.

``per_layer`` (the paper's method) gives every block its own basis, computed from the signal of
the model *as already sliced* up to that block, so slicing errors are accounted for as they
accumulate. Adjacent blocks then disagree on the basis of the stream, and each residual path
carries a shortcut matrix ``Q_in^T Q_out`` (``d' x d'``): the result is not a stock architecture.

``single`` uses one basis for the whole model, the principal axes of all norm inputs together
(each normalised to unit trace, since a norm makes its input's scale irrelevant). No shortcuts are
needed, so for RMSNorm families (Llama, Mistral, Qwen) the result is a stock checkpoint with a
smaller ``hidden_size``.

A norm over ``d'`` coordinates divides by ``d'`` where the original divided by ``d``; its weight
becomes ``sqrt(d / d')`` to compensate. Its epsilon is left as it is (its share of the denominator
changes by ``d'/d``, about 1e-6 relative for activations of unit scale), because stock configs have
one epsilon for every norm, including Qwen3's per-head ones that slicing does not touch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunekit.plugins.slicegpt.fusion import assign
from prunekit.plugins.slicegpt.layouts import install_shortcuts
from prunekit.progress import track

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.plugins.layer_inputs import LayerInputs
    from prunekit.plugins.slicegpt.layouts import Layout


def sliced_width(hidden: int, ratio: float, multiple: int) -> int:
    """``int((1 - r) * d)`` rounded down to a multiple of ``multiple`` (8 in the paper), at least one multiple."""
    width = int((1 - ratio) * hidden) // multiple * multiple
    return min(hidden, max(width, multiple))


class Covariance:
    """``X^T X`` of a signal over calibration tokens, accumulated in float64."""

    def __init__(self) -> None:
        self.matrix: torch.Tensor | None = None

    def add(self, signal: torch.Tensor) -> None:
        rows = signal.detach().reshape(-1, signal.shape[-1]).double()
        product = rows.T @ rows
        self.matrix = product if self.matrix is None else self.matrix + product


def principal_axes(covariance: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (as columns) of the damped covariance, float64."""
    damped = covariance + damping * covariance.diagonal().mean() * torch.eye(
        covariance.shape[0], dtype=covariance.dtype, device=covariance.device)
    values, vectors = torch.linalg.eigh(damped)
    return values.flip(0), vectors.flip(1)


def kept_fraction(values: torch.Tensor, width: int, covariance: torch.Tensor) -> float:
    """Share of the (undamped) signal energy in the ``width`` directions kept."""
    damping = (values.sum() - covariance.trace()) / len(values)
    return float((values[:width].sum() - width * damping) / covariance.trace())


def rotate_inputs(linear: nn.Linear, basis: torch.Tensor) -> None:
    """A module reading the stream: ``W <- W Q`` (``[out, d] -> [out, d']``)."""
    assign(linear, "weight", linear.weight.detach().double() @ basis.to(linear.weight.device))
    linear.in_features = basis.shape[1]


def rotate_outputs(linear: nn.Linear, basis: torch.Tensor) -> None:
    """A module writing into the stream: ``W <- Q^T W``, ``b <- Q^T b`` (``[d, in] -> [d', in]``)."""
    basis = basis.to(linear.weight.device)
    assign(linear, "weight", basis.T @ linear.weight.detach().double())
    if linear.bias is not None:
        assign(linear, "bias", linear.bias.detach().double() @ basis)
    linear.out_features = basis.shape[1]


def rotate_embedding(embedding: nn.Embedding, basis: torch.Tensor) -> None:
    assign(embedding, "weight", embedding.weight.detach().double() @ basis.to(embedding.weight.device))
    embedding.embedding_dim = basis.shape[1]


def set_shortcut(shortcut: nn.Linear, matrix: torch.Tensor) -> None:
    """The shortcut computes ``x -> x M`` (``nn.Linear`` stores ``M^T``)."""
    assign(shortcut, "weight", matrix.T)
    shortcut.in_features, shortcut.out_features = matrix.shape


def resize_norm(norm: nn.Module, width: int, source: int) -> None:
    """A scale-free RMSNorm over ``width`` coordinates that normalises as the ``source``-wide one did."""
    assign(norm, "weight", torch.full((width,), math.sqrt(source / width), dtype=torch.float64))
    if isinstance(norm, nn.RMSNorm):
        norm.normalized_shape = (width,)


def rotate_block_inputs(layer: nn.Module, block, basis: torch.Tensor, source: int) -> None:
    for path in block.inputs:
        rotate_inputs(layer.get_submodule(path), basis)
    resize_norm(layer.get_submodule(block.norm), basis.shape[1], source)


def rotate_ends(model: PreTrainedModel, layout: Layout, first: torch.Tensor, last: torch.Tensor, source: int) -> None:
    """The embeddings write the stream in the first basis; the final norm and head read the last."""
    for path in layout.embeddings:
        rotate_embedding(model.get_submodule(path), first)
    resize_norm(model.get_submodule(layout.final_norm), last.shape[1], source)
    rotate_inputs(model.get_submodule(layout.head), last)


def _project(inputs: LayerInputs, basis: torch.Tensor) -> None:
    for position, hidden in enumerate(inputs.hidden):
        inputs.hidden[position] = hidden @ basis.to(hidden.device, hidden.dtype)


@torch.no_grad()
def rotate_per_layer(model: PreTrainedModel, layout: Layout, inputs: LayerInputs, width: int,
                     damping: float, full_ends: bool = False) -> list[float]:
    """SliceGPT proper: a basis per block from the sliced model's own signal, with shortcuts.

    ``inputs.hidden`` starts as the first layer's input in the original basis and is carried down
    the model block by block: expressed in the block's input basis (``d'`` wide), run through the
    block with its outputs not yet rotated and its shortcut mapping back to the original basis, so
    the block's output is the signal entering the next norm, in the original basis (``d`` wide);
    its PCA gives the block's output basis. Only one layer's activations are held at a time.

    With ``full_ends`` the stream enters the first block and leaves the last one in the original,
    full basis: the embeddings, the final norm and the head are not touched (a tied head stays
    tied), and the first and last shortcuts map between the full and the sliced width.
    Returns the share of signal energy kept by each basis, in model order.
    """
    source = inputs.hidden[0].shape[-1]
    full = torch.eye(source, dtype=torch.float64, device=inputs.hidden[0].device)
    kept: list[float] = []

    def basis_of(covariance: Covariance) -> torch.Tensor:
        values, vectors = principal_axes(covariance.matrix, damping)
        kept.append(round(kept_fraction(values, width, covariance.matrix), 6))
        return vectors[:, :width]

    if full_ends:
        current = full
    else:
        covariance = Covariance()
        for hidden in inputs.hidden:
            covariance.add(hidden)
        current = basis_of(covariance)
        _project(inputs, current)
    first = current
    layers = layout.layer_list(model)
    for index, layer in enumerate(track(layers, "rotating layers")):
        install_shortcuts(layer, layout, width)
        for block in layout.blocks:
            last = full_ends and index == len(layers) - 1 and block is layout.blocks[-1]
            rotate_block_inputs(layer, block, current, source)
            shortcut = layer.get_submodule(block.shortcut)
            set_shortcut(shortcut, current.T)  # back to the original basis while calibrating
            covariance = Covariance()
            run = getattr(layer, block.method)
            for position, hidden, kwargs in inputs.batches(index):
                output = run(hidden, **kwargs)
                covariance.add(output)
                inputs.hidden[position] = output
            following = full if last else basis_of(covariance)
            for path in block.outputs:
                rotate_outputs(layer.get_submodule(path), following)
            set_shortcut(shortcut, current.T @ following)
            _project(inputs, following)
            current = following
    if not full_ends:
        rotate_ends(model, layout, first, current, source)
    return kept


@torch.no_grad()
def rotate_single(model: PreTrainedModel, layout: Layout, inputs: LayerInputs, width: int,
                  damping: float) -> list[float]:
    """One basis for the whole model: PCA of every norm input of the unsliced model, each at unit trace.

    The signals are read with forward pre-hooks on the norms while the (fused, unrotated) layers
    run one at a time; then every module is rotated with the same basis. Returns the share of
    signal energy the basis keeps, overall.
    """
    source = inputs.hidden[0].shape[-1]
    total = torch.zeros(source, source, dtype=torch.float64, device=inputs.hidden[0].device)

    def add(covariance: Covariance) -> None:
        nonlocal total
        total = total + covariance.matrix / covariance.matrix.trace()

    layers = layout.layer_list(model)
    for index, layer in enumerate(track(layers, "calibrating layers")):
        signals = {block.norm: Covariance() for block in layout.blocks}
        handles = [layer.get_submodule(norm).register_forward_pre_hook(
            lambda module, args, covariance=covariance: covariance.add(args[0]))
            for norm, covariance in signals.items()]
        inputs.advance(index, layer, handles)
        for covariance in signals.values():
            add(covariance)
    final = Covariance()  # the final norm's input
    for hidden in inputs.hidden:
        final.add(hidden)
    add(final)
    values, vectors = principal_axes(total, damping)
    basis = vectors[:, :width]
    for layer in layers:
        for block in layout.blocks:
            rotate_block_inputs(layer, block, basis, source)
            for path in block.outputs:
                rotate_outputs(layer.get_submodule(path), basis)
    rotate_ends(model, layout, basis, basis, source)
    return [round(kept_fraction(values, width, total), 6)]
