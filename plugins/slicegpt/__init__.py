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
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import BaseModel, Field

from prunekit import hookimpl
from prunekit.errors import UsageError
from prunekit.payloads import Dimension, ModelSlice, RestoreRequest, ScoreRequest
from prunekit.layer_inputs import capture_inputs
from prunekit.plugins.calibration import CalibrationOptions, calibration_samples, resolve
from prunekit.plugins.slicegpt.fusion import fuse, head_is_tied
from prunekit.plugins.slicegpt.layouts import layout_for
from prunekit.plugins.slicegpt.rotation import rotate_per_layer, rotate_single, sliced_width
from prunekit.plugins.slicegpt.structure import PLUGIN, record, restore


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
@torch.no_grad()
def slice_model(request: ScoreRequest) -> ModelSlice:
    options = SliceGPTOptions.model_validate(request.options(PLUGIN))
    model = request.model
    layout = layout_for(model)
    calibration = resolve(options, model, request.config.seed)
    samples = calibration_samples(request.tokenizer, options, calibration)  # bad input fails before any change

    source = model.get_submodule(layout.embeddings[0]).weight.shape[1]
    width = sliced_width(source, request.config.ratio_for(Dimension.HIDDEN), options.multiple_of)
    full_ends = keeps_full_ends(options, model, layout, source, width)

    start = time.perf_counter()
    fused = fuse(model, layout, full_ends)
    inputs = capture_inputs(model, layout.layer_list(model), samples, options.batch_size)
    shortcuts = options.rotation == "per_layer"
    if shortcuts:
        kept = rotate_per_layer(model, layout, inputs, width, options.damping, full_ends)
    else:
        kept = rotate_single(model, layout, inputs, width, options.damping)
    stock = record(model, layout, width, source, shortcuts, fused["added_biases"], full_ends)
    report = {
        "method": "SliceGPT rotate-and-slice",
        "rotation": options.rotation,
        "embeddings": "full" if full_ends else "sliced",
        "hidden_size": {"before": source, "after": width},
        "calibration": calibration.report(),
        "energy_kept": kept,
        "shortcut_matrices": len(layout.blocks) * len(layout.layer_list(model)) if shortcuts else 0,
        "untied_head": fused["untied_head"],
        "added_biases": fused["added_biases"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return ModelSlice(Dimension.HIDDEN, stock=stock, report=report)


def keeps_full_ends(options: SliceGPTOptions, model, layout, source: int, width: int) -> bool:
    """Whether the embeddings and head keep their full width (``embeddings: full``, or ``auto``).

    A tied head must be untied before it can be rotated (the final norm's scale is folded into it),
    which doubles a ``vocab x d'`` matrix; keeping one tied ``vocab x d`` matrix is smaller whenever
    ``d <= 2 d'``. LayerNorm families centre the embedding, which a tied head cannot follow.
    """
    tied = head_is_tied(model, layout)
    if options.embeddings == "full":
        if options.rotation != "per_layer":
            raise UsageError("slicegpt embeddings: full needs rotation: per_layer (single rotation has no shortcuts)")
        if tied and layout.layernorm:
            raise UsageError(f"slicegpt embeddings: full cannot keep the tied head of a {layout.name} model "
                             "(its LayerNorms need a centred embedding)")
        return True
    return (options.embeddings == "auto" and options.rotation == "per_layer" and tied
            and not layout.layernorm and source <= 2 * width)


@hookimpl
def restore_structure(request: RestoreRequest) -> bool | None:
    if request.structure.get("plugin") != PLUGIN:
        return None
    restore(request.model, request.structure)
    return True
