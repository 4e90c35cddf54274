"""SliceGPT's ``slice_model``: the whole model rotated and sliced (the method is described in
:mod:`prunekit.plugins.slicegpt`), imported only when a run slices, since it needs torch."""

from __future__ import annotations

import time

import torch

from prunekit.errors import UsageError
from prunekit.plugins.layer_inputs import capture_inputs
from prunekit.payloads import Dimension, ModelSlice, ScoreRequest
from prunekit.plugins.calibration import calibration_samples, resolve
from prunekit.plugins.slicegpt import PLUGIN, SliceGPTOptions
from prunekit.plugins.slicegpt.fusion import fuse, head_is_tied
from prunekit.plugins.slicegpt.layouts import layout_for
from prunekit.plugins.slicegpt.rotation import rotate_per_layer, rotate_single, sliced_width
from prunekit.plugins.slicegpt.structure import record


@torch.no_grad()
def rotate_and_slice(request: ScoreRequest) -> ModelSlice:
    """The ``slice_model`` hook: fuse the norms, calibrate, rotate and slice every block, and
    record the structure the checkpoint needs."""
    options = SliceGPTOptions.model_validate(request.options(PLUGIN))
    model = request.model
    layout = layout_for(model, request.architecture)
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
