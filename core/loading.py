"""``prunekit.load(DIR)``: load a checkpoint whose layers differ in size, which no stock config can say.

A stock config holds one ``intermediate_size`` and one head count for all layers. Per-layer counts go under
``prunekit_layer_units`` in the config of an ordinary safetensors checkpoint: the loader builds the model from the
config, shrinks each layer through the family's adapter, then loads the weights (no pickle anywhere). Modules the stock
family lacks (SliceGPT's shortcut matrices) are recorded under ``prunekit_structure`` with the plugin that wrote them,
which rebuilds them (``restore_structure``) before the weights load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from prunekit.architectures import LAYER_UNITS_KEY
from prunekit.errors import UsageError
from prunekit.payloads import Dimension, RestoreRequest

STRUCTURE_KEY = "prunekit_structure"
"""Config attribute of checkpoints with modules the stock family lacks: ``{"plugin": writer, ...}``."""
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
"""A sharded checkpoint's map from each tensor to the shard file holding it."""


def needs_prunekit(directory: Path) -> bool:
    """Whether ``directory``'s checkpoint records per-layer sizes or a non-stock structure (stock loaders fail)."""
    config = directory / "config.json"
    return config.is_file() and bool({LAYER_UNITS_KEY, STRUCTURE_KEY} & json.loads(config.read_text()).keys())


def check_checkpoint(directory: Path) -> list[Path]:
    """The safetensors files of the checkpoint in ``directory``, after checking that it has a config and that each
    file is there and readable (:func:`weight_files`); a ``UsageError`` naming what is wrong otherwise."""
    if not (directory / "config.json").is_file():
        raise UsageError(f"no config.json in {directory}")
    return weight_files(directory)


def weight_files(directory: Path, check: bool = True) -> list[Path]:
    """The safetensors files a checkpoint loads from, in transformers' order (``model.safetensors``, else the shards
    its index names), each checked readable unless ``check`` is off (a reader that checks them itself); none for a
    checkpoint without them (``pytorch_model.bin``, left to transformers). Only headers are read
    (:func:`check_weights_file`), so a good checkpoint costs milliseconds, and a missing shard, a truncated file or a
    corrupt header is a usage error naming the file, not a traceback."""
    if (directory / WEIGHTS).is_file():
        files = [directory / WEIGHTS]
    elif (index := directory / INDEX).is_file():
        try:
            names = json.loads(index.read_text())["weight_map"].values()
            files = [directory / name for name in sorted(set(names))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"cannot read the shard index {index}: {error_reason(exc)}") from exc
        for file in files:
            if not file.is_file():
                raise UsageError(f"weights file {file} is missing ({INDEX} names it as a shard)")
    else:
        return []
    for file in files if check else ():
        check_weights_file(file)
    return files


def check_weights_file(file: Path) -> None:
    """Whether safetensors can open ``file``: its header parses and its tensors' byte ranges cover the file exactly,
    which also catches a file truncated in its data (the header alone is read)."""
    try:
        with safe_open(file, framework="pt") as handle:
            handle.keys()
    except SafetensorError as exc:
        raise unreadable(file, exc) from exc
    except OSError as exc:
        raise UsageError(f"cannot read weights file {file}: {exc.strerror or error_reason(exc)}") from exc


def unreadable(file: Path, exc: Exception) -> UsageError:
    return UsageError(f"cannot read weights file {file}: it is truncated or corrupt ({error_reason(exc)})")


def error_reason(exc: Exception) -> str:
    return " ".join(str(exc).removeprefix("Error while deserializing header: ").split()) or type(exc).__name__


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    files = weight_files(directory)
    if not files:
        raise UsageError(f"no {WEIGHTS} or {INDEX} in {directory}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except SafetensorError as exc:  # changed since it was checked
            raise unreadable(file, exc) from exc
    return state


def load(directory: str | Path, dtype: torch.dtype | None = None):
    """Load a prunekit checkpoint, stock, with per-layer sizes or with a plugin's structure, as a transformers model
    in eval mode; a missing config or a missing or unreadable weights file is a ``UsageError`` naming it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from prunekit.manager import get_plugins

    directory = Path(directory)
    check_checkpoint(directory)
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
