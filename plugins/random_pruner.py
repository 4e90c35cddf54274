"""``random``: keep ``int((1 - r) * n)`` units of every layer chosen uniformly at random, seeded.

The "Random-PruneNet" baseline of the compression-laws paper, which every pruner must beat. Uniform
scores from a generator seeded by the run's ``seed`` make the top-k a uniform random subset.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit import hookimpl
from prunekit.payloads import Dimension, Importance, ScoreRequest


class RandomOptions(BaseModel):
    """Settings of ``random`` under ``options: {random: {...}}``."""

    model_config = ConfigDict(extra="forbid")

    dimensions: list[Dimension] = Field(
        default=[Dimension.FFN], min_length=1, description="Dimensions to slice: ffn, heads and/or layers (depth)."
    )

    @field_validator("dimensions")
    @classmethod
    def _per_layer_units(cls, dimensions: list[Dimension]) -> list[Dimension]:
        # The hidden width has no units of its own to score: only a whole-model slicer rotates it.
        if Dimension.HIDDEN in dimensions:
            raise ValueError("random scores ffn, heads or layers; the hidden width is sliced by slicegpt")
        return dimensions


@hookimpl
def plugin_options() -> type[BaseModel]:
    return RandomOptions


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    import torch

    options = RandomOptions.model_validate(request.options("random"))
    generator = torch.Generator().manual_seed(request.config.seed)
    layers = request.architecture.layers(request.model)
    return [
        Importance(
            dimension,
            [torch.rand(request.architecture.units(layer, dimension), generator=generator) for layer in layers],
            report={"criterion": "uniform random", "seed": request.config.seed},
        )
        for dimension in options.dimensions
    ]
