"""``refit``: compensate what slicing removed by refitting each sliced layer's output projection.

After a pruner removes FFN channels (or attention heads), the kept channels of a layer still feed
the output projection (``down_proj`` / ``fc2``, ``o_proj``) with the weights the uncompressed
layer used, which now miss the removed channels' contribution. ``refit`` solves, per layer and
projection, the regularized least squares of FLAP / SlimGPT / ZipLM-style compensation::

    W = argmin ||D (H W^T - Y)||^2 + lambda ||W - W_0||^2

with ``H`` the kept channels' activations on calibration text, ``Y`` the uncompressed layer's
projection output on the same inputs, and ``W_0`` the sliced projection as it is (its bias, where
the family has one, is refitted as a column of ``W`` on a constant feature). ``D`` weighs each
token by the inverse norm of the residual stream the projection writes into (the uncompressed
layer's output there): the next layer reads that stream through a norm, so an error counts by
its size relative to the stream. Unweighted, the few tokens whose FFN output is massive (on
SmolLM2-135M, 40 to 800 times the median norm in layers 2, 11 and 28, the first token among them)
dominate the fit; where slicing removed the channel that writes such an activation, the
fit spends the other channels on rebuilding it and worsens every ordinary token. Measured on
SmolLM2-135M, PruneNet at FFN 0.1, seeds 1 and 2, which lose those channels: unweighted refit
237 -> 376 and 161 -> 350, weighted 237 -> 163 and 161 -> 74 (benchmarks.md). Regularizing toward
``W_0`` rather than toward zero, and having enough tokens, made the difference in measurements on
SmolLM2-135M (algorithms.md). ``lambda`` is ``damping * mean(diag(H^T H))``, the damping chosen per
layer from a few candidates by the error on held-out calibration windows (never the evaluation
text); when no candidate beats the sliced weights there, the layer is left as it is.

It runs layer by layer on the inputs of the model compressed so far (each refitted layer's output
feeds the next), from :class:`~prunekit.plugins.layer_inputs.LayerInputs`, and builds one
uncompressed layer at a time from ``request.uncompressed``, so memory stays near one layer, its
Gram matrices and the calibration activations beyond the model. Only weights change: the result
is the same stock checkpoint.

The fit lives in :mod:`.fitting`, imported when recovery runs: loading the plugin (listing
plugins, checking a run's options) needs no torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from prunekit import hookimpl
from prunekit.payloads import RecoverRequest, Recovery
from prunekit.plugins.calibration import CalibrationOptions

NAME = "refit"
DAMPING = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]


class RefitOptions(CalibrationOptions):
    """Settings of ``refit`` under ``options: {refit: {...}}``; calibration fields as for the
    calibration pruners, with more samples by default (fewer tokens than unknowns overfit)."""

    count: int = Field(default=64, gt=0, description="Calibration samples (default 64).")
    held_out: float = Field(
        default=0.25, gt=0, lt=1, description="Share of the calibration batches kept aside to choose the damping."
    )
    damping: list[Annotated[float, Field(gt=0)]] = Field(
        default=DAMPING, min_length=1,
        description="Candidate ridge strengths, as multiples of mean(diag(H^T H)); the held-out error picks one per layer.",
    )
    weighting: Literal["residual", "uniform"] = Field(
        default="residual",
        description="Token weights of the fit: 'residual' divides each token's error by the norm of the "
        "residual stream it lands in (the uncompressed layer's output); 'uniform' weighs every token alike.",
    )

    @model_validator(mode="after")
    def _two_batches(self) -> RefitOptions:
        if math.ceil(self.count / self.batch_size) < 2:
            raise ValueError(f"count {self.count} at batch_size {self.batch_size} is one calibration batch; "
                             "refit holds out whole batches and needs at least 2")
        return self

    def held_out_batches(self, batches: int) -> set[int]:
        """The positions of the held-out batches: the last ``held_out`` share, at least one."""
        return set(range(batches - max(1, round(self.held_out * batches)), batches))


@hookimpl
def plugin_options() -> type[BaseModel]:
    return RefitOptions


@hookimpl
def recover(request: RecoverRequest) -> Recovery | None:
    from prunekit.plugins.refit.fitting import refit

    return refit(request)
