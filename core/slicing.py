"""The plan of which units each layer keeps.

A pruner scores every unit once, :func:`keep_plan` turns the scores into kept indices for the run's ratio, and
``slice_layer`` (the core plugin ``slicer`` answers last) removes the rest layer by layer, so peak memory stays near
one layer's new weights beyond the model. Depth is planned across layers instead: :func:`kept_layers` picks the
decoder layers that stay, and the architecture's ``drop_layers`` removes the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from prunekit.payloads import Dimension, Importance

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from prunekit.architectures import Architecture


def kept_units(units: int, ratio: float) -> int:
    """``int((1 - ratio) * units)`` as the papers count it, but never fewer than one unit."""
    return max(1, int((1 - ratio) * units))


def keep_plan(importances: list[Importance], ratio: float, architecture: Architecture, model: PreTrainedModel,
              ratios: Mapping[Dimension, float] | None = None) -> list[dict[Dimension, torch.Tensor]]:
    """Per layer, the sorted indices of the highest-scoring units to keep, per dimension: the top ``int((1 - r) *
    units)``, where ``r`` is the dimension's entry in ``ratios``, else ``ratio``.

    A pruner's scores must cover every unit of every layer and be finite; anything else is a bug in the pruner,
    reported with the layer it concerns rather than sliced into a wrong model. Depth scores are left to
    :func:`kept_layers`."""
    import torch

    layers = list(architecture.layers(model))
    plan: list[dict[Dimension, torch.Tensor]] = [{} for _ in layers]
    for importance in importances:
        dim = importance.dimension
        if dim is Dimension.LAYERS:
            continue
        if len(importance.scores) != len(layers):
            raise RuntimeError(f"{dim.value} scores cover {len(importance.scores)} layers, the model has {len(layers)}")
        counts = importance.keep_counts
        if counts is not None and len(counts) != len(layers):
            raise RuntimeError(f"{dim.value} keep_counts cover {len(counts)} layers, the model has {len(layers)}")
        for index, (layer, scores) in enumerate(zip(layers, importance.scores)):
            units = architecture.units(layer, dim)
            scores = scores.detach().float().reshape(-1).cpu()
            if scores.numel() != units:
                raise RuntimeError(f"layer {index}: {scores.numel()} {dim.value} scores for {units} units")
            if not torch.isfinite(scores).all():
                raise RuntimeError(f"layer {index}: {dim.value} scores contain NaN or Inf")
            keep = kept_units(units, (ratios or {}).get(dim, ratio)) if counts is None else counts[index]
            if not 0 < keep <= units:
                raise RuntimeError(f"layer {index}: cannot keep {keep} of {units} {dim.value} units")
            # stable sort: equal scores keep the lower index, so plans are reproducible
            order = torch.sort(scores, descending=True, stable=True).indices[:keep]
            plan[index][dim] = torch.sort(order).values
    return plan


def kept_layers(importances: list[Importance], ratio: float, layer_count: int) -> list[int] | None:
    """The sorted indices of the top ``int((1 - ratio) * layers)`` decoder layers by their depth score, or ``None``
    when no pruner scored depth; checked like :func:`keep_plan` (one finite score per layer, from one importance)."""
    import torch

    depth = [importance for importance in importances if importance.dimension is Dimension.LAYERS]
    if not depth:
        return None
    if len(depth) > 1:
        raise RuntimeError(f"the pruner scored {Dimension.LAYERS.value} {len(depth)} times")
    importance = depth[0]
    if importance.keep_counts is not None:
        raise RuntimeError(f"keep_counts does not apply to {Dimension.LAYERS.value}; the ratio decides")
    if len(importance.scores) != layer_count:
        raise RuntimeError(f"layers scores cover {len(importance.scores)} layers, the model has {layer_count}")
    for index, score in enumerate(importance.scores):
        if score.numel() != 1:
            raise RuntimeError(f"layer {index}: {score.numel()} layers scores, expected one")
    scores = torch.stack([score.detach().float().reshape(()).cpu() for score in importance.scores])
    if not torch.isfinite(scores).all():
        raise RuntimeError("layers scores contain NaN or Inf")
    # stable sort, as in keep_plan: of equal scores the earlier layer stays
    order = torch.sort(scores, descending=True, stable=True).indices[: kept_units(layer_count, ratio)]
    return sorted(order.tolist())
