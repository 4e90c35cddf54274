"""``slicegpt``: calibration-based rotate-and-slice of the hidden dimension (Ashkboos et al., ICLR 2024).

Every norm is folded into its neighbours and made a plain RMSNorm (:mod:`.fusion`, function
preserving); calibration text then runs through the model one layer at a time, and each block's
output signal is rotated onto its principal axes and cut to ``d' = int((1 - r) * d)`` rounded down
to a multiple of 8 (:mod:`.rotation`). Llama, Mistral, Qwen2/Qwen3, OPT and phi-2 are supported
(:mod:`.layouts`). For a model whose head is tied to its embedding (SmolLM2, Qwen2.5, Llama 3.2),
slicing the embedding means untying it, which can cost more parameters than slicing saves; the
``embeddings`` option keeps both at full width instead where that is smaller.

SliceGPT's rotation runs through the embeddings, every layer and the head, and each layer's basis
depends on the layers sliced before it, so it cannot be split into ratio-independent scores and
per-layer slices: it implements the ``slice_model`` hook. With ``rotation: per_layer`` (the paper)
the result has shortcut matrices and loads with ``prunekit.load(DIR)``; with ``rotation: single``
an RMSNorm family gives a stock checkpoint (:mod:`.structure`).

The hooks here import the work (:mod:`.compress` and the modules it uses) when a run slices or a
checkpoint is restored: loading the plugin needs no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from prunekit import hookimpl
from prunekit.payloads import ModelSlice, RestoreRequest, ScoreRequest
from prunekit.plugins.calibration import CalibrationOptions

PLUGIN = "slicegpt"


class SliceGPTOptions(CalibrationOptions):
    """Settings of ``slicegpt`` under ``options: {slicegpt: {...}}``."""

    rotation: Literal["per_layer", "single"] = Field(
        default="per_layer",
        description="per_layer: a basis per block with shortcut matrices (the paper; loads with "
        "prunekit.load); single: one basis for the whole model (stock checkpoint for RMSNorm families).",
    )
    embeddings: Literal["auto", "slice", "full"] = Field(
        default="auto",
        description="slice: rotate and slice the embeddings and head too (the paper; a tied head is "
        "untied); full: keep them at full width, tied, with the first and last shortcut mapping between "
        "widths (per_layer only); auto: full where the head is tied and that gives fewer parameters.",
    )
    damping: float = Field(default=0.01, ge=0, description="Added to X^T X as a fraction of its mean diagonal.")
    multiple_of: int = Field(default=8, gt=0, description="The sliced width is rounded down to a multiple of this.")


@hookimpl
def plugin_options() -> type[BaseModel]:
    return SliceGPTOptions


@hookimpl
def slice_model(request: ScoreRequest) -> ModelSlice:
    from prunekit.plugins.slicegpt.compress import rotate_and_slice

    return rotate_and_slice(request)


@hookimpl
def restore_structure(request: RestoreRequest) -> bool | None:
    if request.structure.get("plugin") != PLUGIN:
        return None
    from prunekit.plugins.slicegpt.structure import restore

    restore(request.model, request.structure)
    return True
