"""``template``: the smallest complete prunekit pruner, written to be copied.

It scores every FFN channel by the norm of its column in the layer's output projection (``down_proj``
or ``fc2``): the weights through which the channel reaches the residual stream. A channel whose
column is small contributes little whatever its activation, so the channels with the largest norms
are kept. prunekit's core does the rest: it keeps the top ``int((1 - ratio) * channels)`` of every
layer, slices them out, rewrites the config and saves a stock checkpoint.

A pruner needs two things from prunekit: ``hookimpl`` to mark its hook functions, and the typed
payloads (``ScoreRequest`` in, ``Importance`` out). Settings are an ordinary pydantic model,
returned by ``plugin_options`` and validated by the core before the run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl
from prunekit.payloads import Dimension, Importance, ScoreRequest

if TYPE_CHECKING:  # annotations only: importing torch on load would slow every `core plugins list`
    import torch

NAME = "template"
"""The entry-point name in pyproject.toml: what users give to ``--plugins`` and ``options:``."""


class Settings(BaseModel):
    """Settings under ``options: {template: {...}}`` in a run config, or ``-o template.p=2``."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not silence

    p: float = Field(default=1.0, ge=1.0, description="Order of the norm of each channel's column (1: sum of |w|).")


@hookimpl
def plugin_options() -> type[BaseModel]:
    return Settings


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    """One score per FFN channel per layer; higher means keep."""
    from prunekit.plugins.surgery import input_weight_columns  # here, not on load: it imports torch

    settings = Settings.model_validate(request.options(NAME))
    architecture = request.architecture
    scores: list[torch.Tensor] = []
    for layer in architecture.layers(request.model):
        projection = architecture.output_projection(layer, Dimension.FFN)
        columns = input_weight_columns(projection)  # [hidden, channels], whatever the module stores
        scores.append(columns.float().norm(p=settings.p, dim=0))
    return [Importance(Dimension.FFN, scores, report={"criterion": f"L{settings.p:g} norm of output-projection columns"})]
