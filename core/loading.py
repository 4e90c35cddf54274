"""``prunekit.load(DIR)``: load a checkpoint whose layers differ in size, which no stock config can say.

A stock config holds one ``intermediate_size`` and one head count for all layers. When a pruner
keeps different counts per layer, prunekit saves the usual safetensors checkpoint and records the
per-layer counts in the config under ``prunekit_layer_units``; this loader builds the model from
the config, shrinks each layer to its recorded size through the family's adapter, and then loads
the weights. No pickle is involved anywhere.

A checkpoint whose modules differ from the stock family (SliceGPT's rotated residual stream with
shortcut matrices, say) records under ``prunekit_structure`` which plugin wrote it and what it
needs; the loader asks the installed plugins (``restore_structure`` hook) to rebuild those modules
before the weights load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from prunekit.architectures import LAYER_UNITS_KEY
from prunekit.payloads import Dimension, RestoreRequest

STRUCTURE_KEY = "prunekit_structure"
"""Config attribute of checkpoints with modules the stock family lacks: ``{"plugin": writer, ...}``."""


def needs_prunekit(directory: Path) -> bool:
    """Whether the checkpoint in ``directory`` records per-layer sizes or a non-stock structure
    (stock loaders would fail)."""
    config = directory / "config.json"
    return config.is_file() and bool({LAYER_UNITS_KEY, STRUCTURE_KEY} & json.loads(config.read_text()).keys())


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(directory / name))
    return state


def load(directory: str | Path, dtype: torch.dtype | None = None):
    """Load a prunekit checkpoint, stock, with per-layer sizes or with a plugin's structure, as a
    transformers model in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from prunekit.manager import get_plugins

    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory)
    units: dict[str, list[int]] | None = getattr(config, LAYER_UNITS_KEY, None)
    structure: dict | None = getattr(config, STRUCTURE_KEY, None)
    if not units and not structure:
        return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    hooks = get_plugins().hooks([])
    architecture = hooks.architecture_for(model)
    if structure:
        hooks.restore_structure(RestoreRequest(model, structure))
    for dimension, counts in (units or {}).items():
        for layer, count in zip(architecture.layers(model), counts, strict=True):
            architecture.slice(layer, Dimension(dimension), torch.arange(count))
    missing, unexpected = model.load_state_dict(_state_dict(directory), strict=False)
    model.tie_weights()
    untied = set(missing) - set(model.all_tied_weights_keys)
    if untied or unexpected:
        raise ValueError(f"checkpoint {directory} does not match its config: missing {sorted(untied)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.eval()
