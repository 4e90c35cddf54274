"""``activation``: FFN channels and attention heads scored by weight times calibration activation.

A unit of a layer is only as important as what it writes into the residual stream, and that is
the product of its outgoing weights and how strongly it fires on real text. The module whose
input features are the units (``down_proj`` / ``fc2`` for FFN channels, ``o_proj`` for heads, from
``Architecture.output_projection``) is hooked while calibration text runs through the model one
decoder layer at a time, and each input feature ``c`` gets

- ``norm`` (Wanda-sp): ``||W[:, c]||_2 * ||X_c||_2``, the weight column's norm times the norm of the
  feature's activations over every calibration token;
- ``fluctuation`` (FLAP): ``Var(X_c) * ||W[:, c]||_2^2``, how much the feature's contribution moves
  around its mean, i.e. the output error of replacing the feature with a constant.

A unit's score is the sum over its features (one feature per FFN channel; ``head_dim`` features per
query head of a KV group). The core keeps the top ``int((1 - r) * units)`` of every layer and
slices them with the structural slicer, so the output is a stock checkpoint; FLAP's per-layer
adaptive widths and bias compensation would need a non-stock model or new biases and are left out.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from prunekit import hookimpl
from prunekit.errors import UsageError
from prunekit.payloads import Dimension, Importance, ScoreRequest
from prunekit.plugins.calibration import CalibrationOptions, calibration_samples, resolve
from prunekit.progress import track

if TYPE_CHECKING:
    import torch

NAME = "activation"


class ActivationOptions(CalibrationOptions):
    """Settings of ``activation`` under ``options: {activation: {...}}``."""

    dimensions: list[Dimension] = Field(
        default=[Dimension.FFN], min_length=1, description="Dimensions to slice: ffn and/or heads."
    )
    metric: Literal["norm", "fluctuation"] = Field(
        default="norm", description="norm: ||W_col|| * ||X|| (Wanda-sp); fluctuation: Var(X) * ||W_col||^2 (FLAP)."
    )


@hookimpl
def plugin_options() -> type[BaseModel]:
    return ActivationOptions


class FeatureStatistics:
    """Running sums of one module's input features over calibration tokens, in float64."""

    def __init__(self) -> None:
        self.tokens = 0
        self.total: torch.Tensor | float = 0.0
        self.squares: torch.Tensor | float = 0.0

    def __call__(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        features = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        self.tokens += features.shape[0]
        self.total = self.total + features.sum(0)
        self.squares = self.squares + features.square().sum(0)

    def scores(self, module: torch.nn.Module, metric: str) -> torch.Tensor:
        from prunekit.plugins.surgery import input_weight_columns

        columns = input_weight_columns(module).detach().double().norm(dim=0)
        if metric == "norm":
            return columns * self.squares.sqrt()
        mean = self.total / self.tokens
        variance = (self.squares / self.tokens - mean.square()).clamp_min(0)
        return variance * columns.square()


def unit_scores(architecture, layer, dimension: Dimension, feature_scores: torch.Tensor) -> torch.Tensor:
    """Sum feature scores over each unit's features: channels are single features, a KV group
    owns its query heads' ``head_dim`` features each."""
    import torch

    from prunekit.plugins.surgery import head_rows

    if dimension is Dimension.FFN:
        return feature_scores
    groups, per_group, head_dim = architecture.head_shape(layer)
    rows = head_rows(torch.arange(groups), per_group, head_dim).reshape(groups, -1)
    return feature_scores[rows].sum(1)


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    import torch

    from prunekit.plugins.layer_inputs import capture_inputs

    options = ActivationOptions.model_validate(request.options(NAME))
    architecture, model = request.architecture, request.model
    unsupported = [d.value for d in options.dimensions if d not in architecture.dimensions or d is Dimension.LAYERS]
    if unsupported:
        raise UsageError(f"activation cannot score {', '.join(unsupported)} of {architecture.family} models")
    calibration = resolve(options, model, request.config.seed)
    samples = calibration_samples(request.tokenizer, options, calibration)
    start = time.perf_counter()
    layers = architecture.layers(model)
    with torch.no_grad():
        inputs = capture_inputs(model, layers, samples, options.batch_size)
        scores: dict[Dimension, list[torch.Tensor]] = {dimension: [] for dimension in options.dimensions}
        for index, layer in enumerate(track(layers, "calibrating layers")):
            statistics = {d: FeatureStatistics() for d in options.dimensions}
            handles = [architecture.output_projection(layer, d).register_forward_pre_hook(statistics[d])
                       for d in options.dimensions]
            inputs.advance(index, layer, handles)
            for dimension, stats in statistics.items():
                features = stats.scores(architecture.output_projection(layer, dimension), options.metric)
                scores[dimension].append(unit_scores(architecture, layer, dimension, features).float().cpu())
    report = {
        "criterion": {"norm": "||W_col|| * ||X|| (Wanda-sp)", "fluctuation": "Var(X) * ||W_col||^2 (FLAP)"}[options.metric],
        "calibration": calibration.report(),
        "calibration_seconds": round(time.perf_counter() - start, 3),
    }
    return [Importance(dimension, scores[dimension], report=report) for dimension in options.dimensions]
