"""A model whose weights stay on disk: a skeleton on the ``meta`` device, and its decoder layers loaded one at a time.

The skeleton is the model ``from_pretrained`` would build (accelerate's ``init_empty_weights``: every module, no
data), so shapes, counts, the config and the architecture adapter are all there at no memory cost. A pruner sees the
model through :class:`StreamedArchitecture`, whose ``layers(model)`` loads layer ``i`` (in the run's dtype, as
``from_pretrained`` would give it) when it is asked for and puts the previous one back on ``meta``; everything else is
the family's own adapter. So the weight-only pruners (``magnitude``, ``random``, ``prunenet``, a third party's that
walks the layers in order) run unchanged, holding one layer at a time.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import set_module_tensor_to_device

from prunekit.architectures import Architecture
from prunekit.errors import UsageError
from prunekit.models import first_non_finite

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel

    from prunekit.payloads import Dimension
    from prunekit.plugins.streaming.checkpoint import Checkpoint


def import_family(config: PretrainedConfig) -> None:
    """Import the module of ``config``'s family, as ``AutoModelForCausalLM`` does when it first builds one."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)


def skeleton(config: PretrainedConfig, dtype: torch.dtype) -> PreTrainedModel:
    """The model ``from_pretrained(dtype=dtype)`` builds from ``config``, every tensor on ``meta``.

    Built under ``torch.device("meta")``, as ``from_pretrained`` builds before it loads, so that no tensor is ever
    allocated (accelerate's ``init_empty_weights`` allocates each parameter before moving it: untouched, so not
    resident, but counted against a memory cap). The buffers a model computes for itself (rotary frequencies) stay
    meta too: the skeleton is never run."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # building on meta leaves tied weights apart; from_pretrained ties them on loading
    model.config.dtype = dtype  # as from_pretrained records it, so that the config hashes alike
    return model.eval()


def stand_in(config: PretrainedConfig) -> PreTrainedModel:
    """A small random-weight model of the family, for deriving its adapter (which replays layers, so needs weights, and
    the skeleton has none) and the buffers the model computes (:func:`computed_buffers`):
    one decoder layer of each kind the config names (sliding and full attention, say), else one, and a small
    vocabulary. tests/test_streaming.py checks that it derives the loaded model's adapter."""
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(config)
    text = small.get_text_config()
    kinds = list(getattr(text, "layer_types", None) or [])
    text.num_hidden_layers = len(set(kinds)) or 1
    if kinds:
        text.layer_types = list(dict.fromkeys(kinds))
    ids = [value for key in ("pad_token_id", "bos_token_id", "eos_token_id")
           for value in _as_list(getattr(text, key, None)) if isinstance(value, int)]
    text.vocab_size = max([512, *(value + 1 for value in ids)])
    return AutoModelForCausalLM.from_config(small, dtype=torch.float32).eval()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The qualified name of ``module`` inside ``model``."""
    return next(name for name, candidate in model.named_modules() if candidate is module)


def source_name(model: PreTrainedModel, name: str, checkpoint: Checkpoint) -> str:
    """Where the checkpoint keeps the model's tensor ``name``: under that name, or, for a tied weight the file omits
    (``lm_head.weight``), under its source's."""
    if name in checkpoint.entries:
        return name
    tied = (getattr(model, "all_tied_weights_keys", None) or {}).get(name)
    if tied in checkpoint.entries:
        return tied
    raise UsageError(f"--stream reads each tensor under the model's own name, and {checkpoint.directory} has no "
                     f"{name!r} (a checkpoint saved under other names loads only whole)")


class StreamedLayers:
    """The skeleton's decoder layers, each loaded from the checkpoint when indexed (or iterated to), the one before
    put back on ``meta``: at most one layer's weights are in memory."""

    def __init__(self, model: PreTrainedModel, layers: nn.ModuleList, checkpoint: Checkpoint, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.model, self.modules, self.checkpoint, self.dtype, self.device = model, layers, checkpoint, dtype, device
        self.prefix = module_name(model, layers)
        self.loaded: int | None = None
        self.names = [list(layer.state_dict(keep_vars=True)) for layer in layers]  # what the checkpoint holds

    @property
    def unloaded(self) -> nn.ModuleList:
        """The layers as they are, none loaded: for code that needs the modules, not their weights
        (:func:`prunekit.plugins.layer_inputs.capture_inputs` replaces their ``forward``)."""
        return self.modules

    def load_outside(self) -> None:
        """Read what lies outside the layers (embeddings, final norm, head) into the model, for a forward pass up to
        the first layer; memory is then one layer plus these. :meth:`release_outside` puts them back."""
        for name in self.outside():
            self._load(self.model, name, name)
        self.model.tie_weights()

    def _load(self, module: nn.Module, name: str, full_name: str) -> None:
        """The model's tensor ``full_name`` from the checkpoint into ``module`` as ``name``, in the run's dtype (if a
        float) and on its device, as ``from_pretrained`` would give it."""
        stored = self.checkpoint.read(source_name(self.model, full_name, self.checkpoint))
        set_module_tensor_to_device(module, name, self.device,
                                    value=stored.to(self.dtype) if stored.is_floating_point() else stored)

    def before_forward(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                       ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A forward pre-hook for the model: what lies outside the layers loaded (once), the inputs on its device."""
        if self.model.get_input_embeddings().weight.device.type == "meta":
            self.load_outside()
        move = lambda value: value.to(self.device) if isinstance(value, torch.Tensor) else value  # noqa: E731
        return tuple(map(move, args)), {key: move(value) for key, value in kwargs.items()}

    def release_outside(self) -> None:
        for name in self.outside():
            set_module_tensor_to_device(self.model, name, "meta")
        self.model.tie_weights()

    def outside(self) -> list[str]:
        """The tensors outside the layers the checkpoint holds, a tied weight once (under its source's name)."""
        tied = getattr(self.model, "all_tied_weights_keys", None) or {}
        return [name for name in self.model.state_dict(keep_vars=True)
                if not name.startswith(f"{self.prefix}.") and name not in tied]

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[nn.Module]:
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: int) -> nn.Module:
        index = range(len(self))[index]
        if self.loaded != index:
            self.release()
            layer = self.modules[index]
            for name in self.names[index]:
                self._load(layer, name, f"{self.prefix}.{index}.{name}")
            self.loaded = index
            if (tensor := first_non_finite(layer)) is not None:
                raise UsageError(f"{self.prefix}.{index}.{tensor} holds non-finite values (NaN or Inf) in "
                                 f"{self.checkpoint.directory}; a pruned model would be meaningless")
        return self.modules[index]

    def release(self) -> None:
        """Put the loaded layer's weights back on ``meta``, keeping their (perhaps sliced) shapes."""
        if self.loaded is not None:
            layer = self.modules[self.loaded]
            for name in self.names[self.loaded]:
                set_module_tensor_to_device(layer, name, "meta")
            self.loaded = None


class StreamedArchitecture(Architecture):
    """The family's adapter, with the streamed model's layers loaded as they are asked for (:class:`StreamedLayers`);
    any other model is the adapter's as it is."""

    def __init__(self, adapter: Architecture, streamed: StreamedLayers) -> None:
        self.adapter, self.streamed = adapter, streamed
        self.family, self.model_types = adapter.family, adapter.model_types
        self.dimensions, self.lora_targets, self.reasons = adapter.dimensions, adapter.lora_targets, adapter.reasons

    def __getattr__(self, name: str) -> Any:  # an adapter's own extras (head_shape) pass through
        return getattr(self.adapter, name)

    def layers(self, model: PreTrainedModel) -> Any:
        return self.streamed if model is self.streamed.model else self.adapter.layers(model)

    def units(self, layer: nn.Module, dimension: Dimension) -> int:
        return self.adapter.units(layer, dimension)

    def ffn_input_weight(self, layer: nn.Module) -> torch.Tensor:
        return self.adapter.ffn_input_weight(layer)

    def output_projection(self, layer: nn.Module, dimension: Dimension) -> nn.Module:
        return self.adapter.output_projection(layer, dimension)

    def slice(self, layer: nn.Module, dimension: Dimension, keep: torch.Tensor) -> None:
        self.adapter.slice(layer, dimension, keep)

    def sync_config(self, model: PreTrainedModel) -> bool:
        return self.adapter.sync_config(model)

    def drop_layers(self, model: PreTrainedModel, keep: list[int]) -> None:
        raise UsageError("--stream slices layers in place and cannot drop whole layers; run without --stream")


def fingerprint(model: PreTrainedModel, checkpoint: Checkpoint, dtype: torch.dtype) -> Callable[[], str]:
    """:func:`prunekit.models.fingerprint` of the model as ``from_pretrained`` would load it, its tensors read from
    the checkpoint a chunk at a time in ``dtype``: the same hash, so that a streamed run finds the policies and
    baselines an in-memory run cached. Computed on first call, once."""
    from prunekit.models import fingerprint as hashed

    floating = {name: tensor.is_floating_point() for name, tensor in model.state_dict(keep_vars=True).items()}

    @functools.cache
    def compute() -> str:
        return hashed(model, ((name, checkpoint.chunks(source_name(model, name, checkpoint), dtype if wide else None))
                              for name, wide in floating.items()))

    return compute


def computed_buffers(model: PreTrainedModel, small: PreTrainedModel, adapter: Architecture,
                     device: torch.device) -> None:
    """Give the skeleton the buffers the model computes when it is built (rotary tables, embedding scales), from its
    stand-in, which computed them from the same config: a layer's from the stand-in's layer of the same kind. They
    are what a forward pass needs beyond the weights, for a calibration pruner."""
    kinds = list(getattr(model.config.get_text_config(), "layer_types", None) or [])
    order = list(dict.fromkeys(kinds))
    prefix, small_prefix = module_name(model, adapter.layers(model)), module_name(small, adapter.layers(small))
    computed = dict(small.named_non_persistent_buffers())
    for name, buffer in model.named_non_persistent_buffers():
        if name.startswith(f"{prefix}."):
            index, rest = name.removeprefix(f"{prefix}.").split(".", 1)
            kind = order.index(kinds[int(index)]) if kinds else 0
            name_in_small = f"{small_prefix}.{kind}.{rest}"
        else:
            name_in_small = name
        if name_in_small in computed and computed[name_in_small].shape == buffer.shape:
            set_module_tensor_to_device(model, name, device, value=computed[name_in_small].clone())
