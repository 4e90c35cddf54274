"""The least-squares refit of :mod:`prunekit.plugins.refit` (the method is described there),
imported only when recovery runs, since it needs torch."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from prunekit.plugins.surgery import head_rows, input_weight_columns
from prunekit.plugins.layer_inputs import LayerInputs, capture_inputs
from prunekit.payloads import Dimension, RecoverRequest, Recovery
from prunekit.plugins.calibration import calibration_samples, resolve
from prunekit.plugins.refit import NAME, RefitOptions
from prunekit.progress import track

if TYPE_CHECKING:
    from torch import nn

    from prunekit.plugins.surgery import Architecture

log = logging.getLogger(__name__)

ORDER = [Dimension.HEADS, Dimension.FFN]
"""Heads are refitted first: the FFN of a layer reads what its attention wrote."""


@dataclass
class Normal:
    """Running ``H^T H`` and ``H^T Y`` of one projection over calibration tokens, in float64."""

    gram: torch.Tensor | float = 0.0
    cross: torch.Tensor | float = 0.0

    def add(self, features: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: the products in float32 (several times faster on a CPU, and exact
        enough for a few thousand tokens), the sums over batches in float64."""
        features, target = features.float(), target.float()
        self.gram = self.gram + (features.T @ features).double()
        self.cross = self.cross + (features.T @ target).double()

    def error(self, weight: torch.Tensor) -> float:
        """``||H W^T - Y||^2`` up to the constant ``||Y||^2``."""
        return float((weight @ self.gram * weight).sum() - 2 * (weight * self.cross.T).sum())


@dataclass
class Fit:
    """Both halves of the calibration data for one projection."""

    train: Normal = field(default_factory=Normal)
    held_out: Normal = field(default_factory=Normal)

    def solve(self, start: torch.Tensor, damping: list[float]) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """The refitted weight (``None``: keep ``start``) and what was chosen.

        Each candidate damping is fitted on the training half and scored on the held-out half;
        the best one is fitted again on both halves, since more tokens only help."""
        baseline = self.held_out.error(start)
        best, chosen = baseline, None
        for factor in damping:
            error = self.held_out.error(ridge(self.train, start, factor))
            if error < best:
                best, chosen = error, factor
        if chosen is None:
            return None, {"damping": None}
        whole = Normal(self.train.gram + self.held_out.gram, self.train.cross + self.held_out.cross)
        return ridge(whole, start, chosen), {"damping": chosen}


def ridge(normal: Normal, start: torch.Tensor, factor: float) -> torch.Tensor:
    """``argmin ||H W^T - Y||^2 + lambda ||W - start||^2`` with ``lambda = factor * mean(diag(H^T H))``."""
    strength = factor * normal.gram.diagonal().mean()
    eye = torch.eye(normal.gram.shape[0], dtype=normal.gram.dtype, device=normal.gram.device)
    return torch.linalg.solve(normal.gram + strength * eye, normal.cross + strength * start.T).T


def augmented(module: nn.Module) -> torch.Tensor:
    """The projection as ``[out, in (+1)]`` in float64, its bias as a last column where it has one."""
    weight = input_weight_columns(module).detach().double()
    if module.bias is None:
        return weight
    return torch.cat([weight, module.bias.detach().double()[:, None]], dim=1)


def residual_weights(residual: torch.Tensor) -> torch.Tensor:
    """``[tokens, 1]``: each token's weight, the inverse norm of its residual stream ``residual``."""
    flat = residual.detach().reshape(-1, residual.shape[-1]).float()
    return 1 / flat.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def features(inputs: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A projection's input as ``[tokens, in (+1)]``, with the constant feature of its bias."""
    flat = inputs.detach().reshape(-1, inputs.shape[-1])
    if module.bias is None:
        return flat
    return torch.cat([flat, flat.new_ones(flat.shape[0], 1)], dim=1)


@torch.no_grad()
def assign(module: nn.Module, weight: torch.Tensor) -> None:
    """Write a refitted ``[out, in (+1)]`` weight back into the projection, in its own dtype."""
    columns = input_weight_columns(module)
    if module.bias is not None:
        module.bias.copy_(weight[:, -1].to(module.bias.dtype))
        weight = weight[:, :-1]
    columns.copy_(weight.to(columns.dtype))


class Recorder:
    """Forward hooks on one layer run: inputs and outputs of modules, and output replacements."""

    def __init__(self) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def record_input(self, name: str, module: nn.Module) -> None:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self.inputs[name] = args[0]

        self.handles.append(module.register_forward_pre_hook(hook))

    def record_output(self, name: str, module: nn.Module) -> None:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.outputs[name] = output

        self.handles.append(module.register_forward_hook(hook))

    def replace_output(self, module: nn.Module, value: torch.Tensor) -> None:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            return value

        self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def run_with(
    layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any], setup: Callable[[Recorder], None]
) -> Recorder:
    """Run ``layer`` once with the hooks ``setup`` installs, removed afterwards even on failure."""
    recorder = Recorder()
    setup(recorder)
    try:
        layer(hidden, **kwargs)
    finally:
        recorder.remove()
    return recorder


def kept_features(architecture: Architecture, dense: nn.Module, dimension: Dimension, kept: torch.Tensor) -> torch.Tensor:
    """The input features of the output projection that the kept units own: one per FFN channel,
    ``head_dim`` per query head of each kept KV group."""
    if dimension is Dimension.FFN:
        return kept
    _, per_group, head_dim = architecture.head_shape(dense)
    return head_rows(kept, per_group, head_dim)


def refit_dimension(
    architecture: Architecture, options: RefitOptions, layer: nn.Module, dense: nn.Module, inputs: LayerInputs, index: int,
    dimension: Dimension, kept: dict[Dimension, torch.Tensor], held_out: set[int],
) -> dict[str, Any]:
    """Refit the output projection of ``dimension`` in ``layer`` against the uncompressed ``dense``.

    The kept units' activations are those of the uncompressed layer at the kept features, since
    slicing leaves the kept units' input weights as they were, so one run of ``dense`` per batch
    gives both ``H`` and ``Y``, and its output is the residual stream that weighs each token.
    Only when the layer also lost heads does its FFN read another input than the uncompressed
    FFN: then the sliced layer runs first, and its attention output replaces the uncompressed
    one's."""
    projection = architecture.output_projection(layer, dimension)
    target = architecture.output_projection(dense, dimension)
    columns = kept_features(architecture, dense, dimension, kept[dimension]).to(target.weight.device)
    other_heads = dimension is Dimension.FFN and Dimension.HEADS in kept
    fit = Fit()
    for position, hidden, kwargs in inputs.batches(index):
        attention = None
        if other_heads:
            attention = run_with(layer, hidden, kwargs, lambda r: r.record_output(
                "attention", architecture.output_projection(layer, Dimension.HEADS))).outputs["attention"]

        def reference(recorder: Recorder) -> None:
            recorder.record_input("H", target)
            recorder.record_output("Y", target)
            recorder.record_output("residual", dense)
            if attention is not None:
                recorder.replace_output(architecture.output_projection(dense, Dimension.HEADS), attention)

        seen = run_with(dense, hidden, kwargs, reference)
        half = fit.held_out if position in held_out else fit.train
        found = features(seen.inputs["H"].index_select(-1, columns), projection)
        wanted = seen.outputs["Y"].detach().flatten(0, -2)
        if options.weighting == "residual":
            weights = residual_weights(seen.outputs["residual"])
            found, wanted = found * weights, wanted * weights
        half.add(found, wanted)
    weight, chosen = fit.solve(augmented(projection), options.damping)
    if weight is not None:
        assign(projection, weight)
    return chosen


@torch.no_grad()
def refit(request: RecoverRequest) -> Recovery | None:
    """The ``recover`` hook: refit every layer that lost units, in order, on the inputs of the
    model refitted so far."""
    if request.uncompressed is None:
        log.warning("refit: nothing to compensate (no layer was sliced by channels or heads)")
        return None
    options = RefitOptions.model_validate(request.options(NAME))
    architecture, model = request.architecture, request.model
    layers = architecture.layers(model)
    todo = {index: request.uncompressed.kept(index) for index in range(len(layers))}
    if not any(todo.values()):
        log.info("refit: no layer lost units; nothing to refit")
        return None
    start = time.perf_counter()
    calibration = resolve(options, model, request.config.seed)
    samples = calibration_samples(request.tokenizer, options, calibration)
    inputs = capture_inputs(model, layers, samples, options.batch_size)
    held_out = options.held_out_batches(len(inputs.hidden))
    device = next(model.parameters()).device
    per_layer: list[dict[str, Any]] = []
    for index, layer in enumerate(track(layers, "refitting layers")):
        kept = todo[index]
        chosen: dict[str, Any] = {}
        if kept:
            dense = request.uncompressed.layer(index, device)
            for dimension in sorted(kept, key=ORDER.index):
                chosen[dimension.value] = refit_dimension(
                    architecture, options, layer, dense, inputs, index, dimension, kept, held_out)
            del dense
        per_layer.append(chosen)
        inputs.advance(index, layer, [])
    refitted = [c for layer in per_layer for c in layer.values()]
    dampings = [c["damping"] for c in refitted if c["damping"] is not None]
    report = {
        "method": "ridge least squares of each sliced output projection toward its sliced weights, "
                  "on the uncompressed layer's outputs",
        "weighting": options.weighting,
        "calibration": calibration.report(),
        "held_out_batches": len(held_out),
        "projections_refitted": len(dampings),
        "projections_kept": len(refitted) - len(dampings),
        "median_damping": statistics.median(dampings) if dampings else None,
        "per_layer": per_layer,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return Recovery(model, report)

