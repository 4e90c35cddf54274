"""``random``: keep ``int((1 - r) * n)`` units of every layer chosen uniformly at random, seeded.

The "Random-PruneNet" baseline of the compression-laws paper, which every pruner must beat. Uniform
scores from a generator seeded by the run's ``seed`` make the top-k a uniform random subset, and
the same seed gives the same subset at every ratio's prefix of the ranking.

Options (``options: {random: {...}}``): ``dimensions``, a list of ``ffn`` and/or ``heads``
(default ``[ffn]``, the dimension PruneNet slices).
"""

from __future__ import annotations

import torch

from prunekit import hookimpl
from prunekit.errors import UsageError
from prunekit.payloads import Dimension, Importance, ScoreRequest


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    options = request.options("random")
    try:
        dimensions = [Dimension(name) for name in options.get("dimensions", ["ffn"])]
    except ValueError as exc:
        valid = ", ".join(d.value for d in Dimension)
        raise UsageError(f"options.random.dimensions: {exc} (choose from {valid})") from exc
    generator = torch.Generator().manual_seed(request.config.seed)
    layers = request.architecture.layers(request.model)
    return [
        Importance(
            dimension,
            [torch.rand(request.architecture.units(layer, dimension), generator=generator) for layer in layers],
            report={"criterion": "uniform random", "seed": request.config.seed},
        )
        for dimension in dimensions
    ]
