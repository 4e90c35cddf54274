"""The checkpoint format of a sliced model: a stock config where one exists, else ``prunekit_structure``.

A single-rotation slice of an RMSNorm family is an ordinary model with a smaller ``hidden_size``
(and its own head weight, untied): the config says so and stock ``from_pretrained`` loads it.

Anything else needs modules the stock family lacks: shortcut matrices on the residual paths, plain
``torch.nn.RMSNorm`` in place of LayerNorms, a bias on a head that had none. The config then keeps
the source's ``hidden_size`` (OPT derives its attention width from it, so it must stay) and records
under ``prunekit_structure`` what :func:`restore` needs to rebuild those modules, at the sliced
width, on a model freshly built from that config; ``prunekit.load`` then loads the safetensors
weights into it strictly. Nothing is pickled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunekit.loading import STRUCTURE_KEY
from prunekit.plugins.slicegpt import PLUGIN
from prunekit.plugins.slicegpt.fusion import plain_norm
from prunekit.plugins.slicegpt.layouts import install_shortcuts, layout_for
from prunekit.plugins.slicegpt.rotation import rotate_block_inputs, rotate_ends, rotate_outputs, set_shortcut

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.plugins.slicegpt.layouts import Layout


def record(model: PreTrainedModel, layout: Layout, width: int, source: int, shortcuts: bool,
           added_biases: list[str], full_ends: bool = False) -> bool:
    """Write the sliced model's config; ``True`` if the result is a stock architecture."""
    config = model.config
    stock = not (shortcuts or layout.layernorm or added_biases)
    if stock:
        config.head_dim = layout.layer_list(model)[0].self_attn.head_dim  # explicit: no longer hidden / heads
        config.hidden_size = width
    else:
        setattr(config, STRUCTURE_KEY, {
            "plugin": PLUGIN, "family": layout.name, "hidden_size": width, "source_hidden_size": source,
            "shortcuts": shortcuts, "rms_norms": layout.layernorm, "added_biases": added_biases,
            "full_ends": full_ends,
        })
    return stock


def restore(model: PreTrainedModel, structure: dict[str, Any]) -> None:
    """Reshape a model built from the config into the saved structure; the values come from the weights.

    The same rotation functions as compression are used, with the first ``width`` columns of the
    identity as every sliced basis (the whole identity at full-width ends), so compression and
    loading agree on every shape by construction.
    """
    layout = layout_for(model)
    if structure.get("family") != layout.name:
        raise ValueError(f"prunekit_structure was written for {structure.get('family')!r} models, "
                         f"this config builds a {layout.name!r} model")
    source, width = structure["source_hidden_size"], structure["hidden_size"]
    like = model.get_submodule(layout.embeddings[0]).weight
    for name in structure["added_biases"]:
        linear = model.get_submodule(name)
        linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=like.dtype, device=like.device))
    full_ends = structure.get("full_ends", False)
    layers = layout.layer_list(model)
    norms = [f"{layout.layers}.{i}.{block.norm}" for i in range(len(layers)) for block in layout.blocks]
    if structure["rms_norms"]:
        for name in norms + ([] if full_ends else [layout.final_norm]):
            model.set_submodule(name, plain_norm(model.get_submodule(name), like))
    sliced = torch.eye(source, width, dtype=torch.float64)
    full = torch.eye(source, dtype=torch.float64)
    current = full if full_ends else sliced
    for index, layer in enumerate(layers):
        if structure["shortcuts"]:
            install_shortcuts(layer, layout, width)
        for block in layout.blocks:
            last = full_ends and index == len(layers) - 1 and block is layout.blocks[-1]
            following = full if last else sliced
            rotate_block_inputs(layer, block, current, source)
            for path in block.outputs:
                rotate_outputs(layer.get_submodule(path), following)
            if structure["shortcuts"]:
                set_shortcut(layer.get_submodule(block.shortcut), current.T @ following)
            current = following
    if not full_ends:
        rotate_ends(model, layout, sliced, sliced, source)
