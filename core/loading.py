"""``prunekit.load(DIR)``: load a checkpoint whose layers differ in size, which no stock config can say.

A stock config holds one ``intermediate_size`` and one head count for all layers. When a pruner
keeps different counts per layer, prunekit saves the usual safetensors checkpoint and records the
per-layer counts in the config under ``prunekit_layer_units``; this loader builds the model from
the config, shrinks each layer to its recorded size through the family's adapter, and then loads
the weights. No pickle is involved anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from prunekit.architectures import LAYER_UNITS_KEY
from prunekit.payloads import Dimension


def needs_prunekit(directory: Path) -> bool:
    """Whether the checkpoint in ``directory`` records per-layer sizes (stock loaders would fail)."""
    config = directory / "config.json"
    return config.is_file() and LAYER_UNITS_KEY in json.loads(config.read_text())


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(directory / name))
    return state


def load(directory: str | Path, dtype: torch.dtype | None = None):
    """Load a prunekit checkpoint, stock or with per-layer sizes, as a transformers model in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from prunekit.manager import get_plugins

    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory)
    units: dict[str, list[int]] | None = getattr(config, LAYER_UNITS_KEY, None)
    if not units:
        return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    architecture = get_plugins().hooks([]).architecture_for(model)
    for dimension, counts in units.items():
        for layer, count in zip(architecture.layers(model), counts, strict=True):
            architecture.slice(layer, Dimension(dimension), torch.arange(count))
    missing, unexpected = model.load_state_dict(_state_dict(directory), strict=False)
    model.tie_weights()
    untied = set(missing) - set(model.all_tied_weights_keys)
    if untied or unexpected:
        raise ValueError(f"checkpoint {directory} does not match its config: missing {sorted(untied)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.eval()
