"""An architecture adapter derived from the loaded model itself, for families no plugin describes.

A model whose ``model_type`` no registered adapter claims gets a
:class:`~prunekit.plugins.discovery.adapter.DecoderArchitecture` found from its module structure,
its shapes and its config, not from its family's name:

- the decoder layers are the one ``nn.ModuleList`` as long as ``num_hidden_layers``;
- the attention is the layer's submodule that knows its heads (``head_dim``, ``num_heads``...);
  it holds q, k and v (or one fused qkv) that read the hidden width, and the projection that
  writes it back;
- the FFN is what is left: the one projection outside the attention that writes the hidden width
  from a wider input (down_proj, fc2), and the projections that read the hidden width into that
  width (gate and up, fc1; or one fused gate_up of twice the width, whose halves stay aligned);
- the config fields to rewrite are those that make transformers build the sliced shapes: a copy
  of the config is rewritten, saved to a dict and read back as a checkpoint would be, and the
  model is built from it on the meta device, where building costs nothing.

Structure alone proves nothing about what a layer computes (a norm inside the MLP, per-head
parameters, an interleaved fused layout would all slice into a wrong model), so before the
adapter is used, the first layer of every kind (``config.layer_types``: Gemma 3's sliding and full
attention) is sliced on copies and replayed on inputs captured from the model's own forward. The
sliced layer must compute what the original computes with the removed units zeroed. A dimension
that fails, or that cannot be placed, is not offered, and asking for it says why in one line; a
model with no decoder layer list is refused outright.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prunekit.plugins.surgery import input_weight_columns, is_int, zero_removed_units
from prunekit.errors import UsageError
from prunekit.payloads import Dimension
from prunekit.plugins.discovery.adapter import (
    AttentionLayout,
    DecoderArchitecture,
    keep_layers_in_config,
    out_features,
    renumber,
)
from prunekit.plugins.layer_inputs import capture_inputs

from transformers import PreTrainedModel

if TYPE_CHECKING:
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)

LINEAR = (nn.Linear, Conv1D)
HEAD_ATTRIBUTES = ("head_dim", "head_size", "num_heads", "num_attention_heads", "attention_head_size", "n_head")
"""Attributes by which a transformers attention module knows its heads, and so is recognised."""
FFN_FIELDS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "d_ff", "inner_hidden_size")
"""Config fields tried first for the FFN width (transformers' conventions); after them, any integer
field holding the width. Each is kept only if the model built from the rewritten config has the
sliced shapes."""
TOLERANCE = 1e-4
"""Largest difference, relative to the layer output's largest magnitude, between a sliced layer and
the original with the removed units zeroed, both in float32."""
PROBE_TOKENS = 8


def derive(model: PreTrainedModel) -> DecoderArchitecture:
    """The adapter for ``model``, checked by replaying its layers; a :class:`UsageError` if its
    decoder layers cannot be found."""
    text = model.config.get_text_config()
    family = getattr(model.config, "model_type", None) or type(model).__name__
    hidden, count = _config_int(text, "hidden_size"), _config_int(text, "num_hidden_layers")
    if hidden is None or count is None:
        raise UsageError(f"cannot slice {family!r} models: the config has no hidden_size or num_hidden_layers")
    path = _layers_path(model, count, family)
    layers = model.get_submodule(path)
    layer = layers[0]
    linears = {name: module for name, module in layer.named_modules() if isinstance(module, LINEAR)}
    reasons: dict[Dimension, str] = {}
    attention_name, attention, reason = _attention(layer, linears, hidden, text)
    if reason:
        reasons[Dimension.HEADS] = reason
    ffn = _ffn(layer, linears, attention_name, hidden, text)
    if isinstance(ffn, str):
        reasons[Dimension.FFN] = ffn
        inputs, output, fused = (), "", False
    else:
        inputs, output, fused = ffn
    parts = {Dimension.FFN: lambda name: not _under(name, attention_name),
             Dimension.HEADS: lambda name: _under(name, attention_name), Dimension.LAYERS: lambda name: True}
    for dimension, part in parts.items():  # the config says which layer is which, by index
        different = _first_different_layer(layers, part)
        if different is not None:
            reasons.setdefault(dimension, f"layer {different} has other projections than layer 0")
    arch = DecoderArchitecture(
        family=family,
        model_types=(getattr(model.config, "model_type", family),),
        layers_path=path,
        ffn_inputs=inputs,
        ffn_output=output,
        ffn_field=None,
        lora_targets=tuple(dict.fromkeys(name.rsplit(".", 1)[-1] for name in linears)),
        attention=attention,
        ffn_fused=fused,
        reasons=reasons,
    )
    if Dimension.FFN not in reasons:
        found = _ffn_field(model, arch, text)
        if found is None:
            reasons[Dimension.FFN] = "no config field sets the FFN width"
        field_name, factor = found or (None, 1)
        arch = _with(arch, ffn_field=field_name, ffn_field_factor=factor, reasons=reasons)
    if Dimension.HEADS not in reasons and arch.head_shape(layer)[0] == 1:
        reasons[Dimension.HEADS] = "the attention has one KV group, and a head is removed with its whole group"
        arch = _with(arch, reasons=reasons)
    if Dimension.HEADS not in reasons and not _heads_fit_config(model, arch):
        reasons[Dimension.HEADS] = "the config cannot express fewer heads (the model derives the head width)"
        arch = _with(arch, reasons=reasons)
    probe = _probe(model, arch, text)
    failures = _replay(model, arch, text, probe)
    if Dimension.LAYERS in arch.dimensions:
        reason = probe if isinstance(probe, str) else _layers_fit(model, arch, probe)
        if reason:
            failures[Dimension.LAYERS] = reason
    if failures:
        reasons.update(failures)
        arch = _with(arch, reasons=reasons)
    log.info("derived the %s adapter from the model: %s (refused: %s)", family,
             ", ".join(sorted(d.value for d in arch.dimensions)), reasons or "nothing")
    return arch


def _with(arch: DecoderArchitecture, **changes: Any) -> DecoderArchitecture:
    """``arch`` with fields replaced; ``dimensions`` is computed again from them."""
    fields = {name: getattr(arch, name) for name in DecoderArchitecture.__dataclass_fields__ if name != "dimensions"}
    return DecoderArchitecture(**{**fields, **changes})


def _config_int(config: PretrainedConfig, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if is_int(value) else None


# --- placing the parts ---------------------------------------------------------------------------


def _layers_path(model: PreTrainedModel, count: int, family: str) -> str:
    """The path of the one module list of ``count`` layers; nested lists of that length (a vision
    tower inside a multimodal model) are told apart by holding no decoder of the text model."""
    lists = [name for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) == count
             and any(isinstance(sub, LINEAR) for sub in module[0].modules())]
    if len(lists) > 1:  # prefer the lists under the text decoder, outside other towers (vision, audio)
        decoder = _decoder_path(model)
        if decoder is not None:
            lists = [name for name in lists if name.startswith(decoder)] or lists
        decoder_module = model.get_decoder() if hasattr(model, "get_decoder") else None
        towers = [name + "." for name, module in model.named_modules()
                  if name and isinstance(module, PreTrainedModel) and module is not decoder_module]
        lists = [name for name in lists if not any(name.startswith(tower) for tower in towers)] or lists
    if len(lists) != 1:
        found = "none" if not lists else ", ".join(lists)
        raise UsageError(f"cannot slice {family!r} models: cannot place the decoder layers "
                         f"(module lists of {count} layers with projections: {found})")
    return lists[0]


def _decoder_path(model: PreTrainedModel) -> str | None:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for name, module in model.named_modules():
        if module is decoder and name:
            return name + "."
    return None


def _marked(module: nn.Module) -> bool:
    return any(isinstance(getattr(module, name, None), int) for name in HEAD_ATTRIBUTES)


def _attention(layer: nn.Module, linears: dict[str, nn.Module], hidden: int, text: PretrainedConfig
               ) -> tuple[str | None, AttentionLayout | None, str | None]:
    """(attention module path, its layout or ``None``, why heads are not offered or ``None``)."""
    marked = [name for name, module in layer.named_modules() if name and _marked(module)]
    outermost = [name for name in marked if not any(name.startswith(other + ".") for other in marked)]
    if len(outermost) != 1:
        return None, None, ("no attention module knows its heads" if not outermost else
                            f"the layer has {len(outermost)} attention modules ({', '.join(outermost)})")
    name = outermost[0]
    module = layer.get_submodule(name)
    inner = {n: m for n, m in linears.items() if _under(n, name)}
    writers = [n for n, m in inner.items() if out_features(m) == hidden]
    if not writers:
        return name, None, f"{name} has no projection back to the hidden width"
    out = writers[-1]  # registered after q, k and v, which may be square too
    readers = [n for n, m in inner.items() if _in_features(m) == hidden and n != out]
    head_dim = _config_int(module, "head_dim") or _config_int(module, "head_size") or _config_int(text, "head_dim")
    heads = _config_int(text, "num_attention_heads")
    if head_dim is None and heads:
        head_dim = hidden // heads
    if not head_dim:
        return name, None, f"{name} has no head width"
    queries = _in_features(linears[out])
    if queries % head_dim:
        return name, None, f"{out} reads {queries} features, not whole heads of {head_dim}"
    if len(readers) == 3:
        q, k, v = readers
        if out_features(linears[k]) != out_features(linears[v]) or out_features(linears[q]) != queries \
                or queries % out_features(linears[k]):
            return name, None, f"cannot tell q, k and v apart in {name}"
        return name, AttentionLayout(name, q, k, v, out, head_dim=head_dim), None
    if len(readers) == 1:
        fused = readers[0]
        query_heads = queries // head_dim
        kv_heads = (out_features(linears[fused]) - queries) // 2 // head_dim
        if kv_heads < 1 or query_heads % kv_heads or out_features(linears[fused]) != (query_heads + 2 * kv_heads) * head_dim:
            return name, None, f"{fused} is not queries, keys and values of whole heads"
        return name, AttentionLayout(name, fused, fused, fused, out, head_dim=head_dim,
                                     queries_per_group=query_heads // kv_heads), None
    return name, None, f"{name} has {len(readers)} projections of the hidden width"


def _under(name: str, parent: str | None) -> bool:
    return parent is not None and (name == parent or name.startswith(parent + "."))


def _in_features(module: nn.Module) -> int:
    return input_weight_columns(module).shape[1]


def _ffn(layer: nn.Module, linears: dict[str, nn.Module], attention: str | None, hidden: int, text: PretrainedConfig
         ) -> tuple[tuple[str, ...], str, bool] | str:
    """(input projections, output projection, fused gate_up) of the FFN, or why it is not placed."""
    outside = {n: m for n, m in linears.items() if not _under(n, attention)}
    experts = [name for name, module in layer.named_modules()
               if isinstance(module, nn.ModuleList) and not _under(name, attention)]
    experts += [name for name, parameter in layer.named_parameters()
                if parameter.dim() > 2 and "expert" in name and not _under(name, attention)]
    if experts:
        return f"the FFN is a mixture of experts ({experts[0]})"
    stacked = [name for name, parameter in layer.named_parameters() if parameter.dim() > 2 and not _under(name, attention)]
    if stacked:
        return f"the layer computes with a {layer.get_parameter(stacked[0]).dim()}-D weight ({stacked[0]}), not only projections"
    def fed(writer: str) -> bool:  # some projection of the hidden width produces its input (or twice it)
        width = _in_features(outside[writer])
        return any(_in_features(m) == hidden and out_features(m) in (width, 2 * width) for m in outside.values())

    writers = [n for n, m in outside.items() if out_features(m) == hidden and _in_features(m) != hidden and fed(n)]
    if len(writers) > 1:  # e.g. Gemma 3n's per-layer input projection beside the MLP: the config names the FFN
        values = [getattr(text, name, None) for name in FFN_FIELDS]
        widths = {width for value in values for width in (value if isinstance(value, list) else [value]) if is_int(width)}
        writers = [n for n in writers if _in_features(outside[n]) in widths] or writers
    if len(writers) != 1:
        return ("no projection writes the hidden width from another, fed from the hidden width" if not writers
                else f"{len(writers)} projections could be the FFN output ({', '.join(writers)})")
    output = writers[0]
    width = _in_features(outside[output])
    inputs = [n for n, m in outside.items() if _in_features(m) == hidden and out_features(m) == width]
    doubled = [n for n, m in outside.items() if _in_features(m) == hidden and out_features(m) == 2 * width]
    if inputs and len(inputs) <= 2 and not doubled:
        inputs.sort(key=lambda name: "gate" not in name.rsplit(".", 1)[-1])  # the gate is the scored matrix
        return tuple(inputs), output, False
    if len(doubled) == 1 and not inputs:
        return (doubled[0],), output, True
    return f"cannot place the projections into {output}'s {width} channels"


def _signature(layer: nn.Module, part: Callable[[str], bool]) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(module.weight.shape)) for name, module in layer.named_modules()
            if isinstance(module, LINEAR) and part(name)]


def _first_different_layer(layers: nn.ModuleList, part: Callable[[str], bool]) -> int | None:
    """The first layer whose projections in ``part`` differ from layer 0's, or ``None``."""
    first = _signature(layers[0], part)
    return next((index for index, layer in enumerate(layers) if _signature(layer, part) != first), None)


# --- the config fields, checked by building the model from a rewritten config --------------------


def _built_shapes(model: PreTrainedModel, edits: dict[str, int]) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes of the model transformers builds from ``model``'s config with ``edits``
    made to the text config, read back from a dict as from a saved checkpoint; ``None`` if it
    cannot be built."""
    config = copy.deepcopy(model.config)
    text = config.get_text_config()
    try:
        for name, value in edits.items():
            setattr(text, name, value)  # a derived field is a read-only property on some configs
        reloaded = type(config).from_dict(config.to_dict())
        with torch.device("meta"):
            built = type(model)._from_config(reloaded)
    except Exception as error:  # noqa: BLE001 - any failure means this rewrite is not a checkpoint
        log.debug("building %s with %s failed: %s", type(model).__name__, edits, error)
        return None
    return {name: tuple(parameter.shape) for name, parameter in built.named_parameters()}


def _weight_shape(module: nn.Module, outputs: int, inputs: int) -> tuple[int, int]:
    return (inputs, outputs) if isinstance(module, Conv1D) else (outputs, inputs)


def _ffn_field(model: PreTrainedModel, arch: DecoderArchitecture, text: PretrainedConfig
               ) -> tuple[str, int] | None:
    """The config field that sets the FFN width, and how many times the width it holds (2 where a
    fused gate_up's whole output is the field, as Moshi's ``ffn_dim``); ``None`` if none does."""
    layer = arch.layers(model)[0]
    width = arch.units(layer, Dimension.FFN)
    narrower = width - 1
    hidden = text.hidden_size
    expected = {}
    for index in range(len(arch.layers(model))):
        prefix = f"{arch.layers_path}.{index}."
        for name in arch.ffn_inputs:
            module = layer.get_submodule(name)
            expected[f"{prefix}{name}.weight"] = _weight_shape(module, narrower * (2 if arch.ffn_fused else 1), hidden)
        expected[f"{prefix}{arch.ffn_output}.weight"] = _weight_shape(layer.get_submodule(arch.ffn_output), hidden, narrower)
    factors = (1, 2) if arch.ffn_fused else (1,)
    holding = [name for name, value in text.to_dict().items()
               if is_int(value) and value in {width * factor for factor in factors}]
    for name in dict.fromkeys([*(f for f in FFN_FIELDS if hasattr(text, f)), *holding]):
        for factor in factors:
            shapes = _built_shapes(model, {name: narrower * factor})
            if shapes is not None and all(shapes.get(key) == shape for key, shape in expected.items()):
                return name, factor
    return None


def _heads_fit_config(model: PreTrainedModel, arch: DecoderArchitecture) -> bool:
    """Whether the config rewritten as ``sync_config`` rewrites it builds a model with one KV group
    fewer (one more where there is only one), shaped as slicing leaves it."""
    layer = arch.layers(model)[0]
    attention = arch.attention
    groups, per_group, head_dim = arch.head_shape(layer)
    other = groups - 1 if groups > 1 else 2
    text = model.config.get_text_config()
    edits = {"num_attention_heads": other * per_group, "head_dim": head_dim}
    if hasattr(text, "num_key_value_heads"):
        edits["num_key_value_heads"] = other
    shapes = _built_shapes(model, edits)
    if shapes is None:
        return False
    hidden = text.hidden_size
    prefix = f"{arch.layers_path}.0."
    queries, keys = other * per_group * head_dim, other * head_dim
    expected = {attention.out: (hidden, queries)}
    if attention.fused:
        expected[attention.q] = (queries + 2 * keys, hidden)
    else:
        expected.update({attention.q: (queries, hidden), attention.k: (keys, hidden), attention.v: (keys, hidden)})
    return all(shapes.get(f"{prefix}{name}.weight") == _weight_shape(layer.get_submodule(name), *shape)
               for name, shape in expected.items())


def _layers_fit(model: PreTrainedModel, arch: DecoderArchitecture, probe: Probe) -> str | None:
    """Why dropping layers would not reload as it computes, or ``None``: the config with layer 0
    dropped (as ``drop_layers`` rewrites it) must build the same parameters, one layer fewer, and
    the layer built there from layer 1's weights must compute what layer 1 computes after
    ``drop_layers`` has renumbered it (a family may derive per-layer constants from the index)."""
    layers = arch.layers(model)
    if len(layers) < 2:
        return None
    config = copy.deepcopy(model.config)
    text = config.get_text_config()
    try:
        keep_layers_in_config(text, list(range(1, len(layers))))
        with torch.device("meta"):
            built = type(model)._from_config(type(config).from_dict(config.to_dict()))
    except Exception as error:  # noqa: BLE001 - the reason is reported
        return f"the config cannot express fewer layers ({type(error).__name__}: {_line(error)})"
    prefix = arch.layers_path + "."
    expected = {}
    for name, parameter in model.named_parameters():
        if name.startswith(prefix):
            index, rest = name[len(prefix):].split(".", 1)
            if index == "0":
                continue
            name = f"{prefix}{int(index) - 1}.{rest}"
        expected[name] = tuple(parameter.shape)
    if {name: tuple(p.shape) for name, p in built.named_parameters()} != expected:
        return "the config cannot express fewer layers (other parameters are built)"
    hidden, per_layer = probe
    original = copy.deepcopy(layers[1]).float()
    renumber(original, 0)  # as drop_layers renumbers the layer that moves to the front
    fresh = built.get_submodule(f"{prefix}0").to_empty(device=hidden.device).float().eval()  # no dropout
    try:
        fresh.load_state_dict(original.state_dict())
        for name, buffer in original.named_buffers():  # non-persistent ones too (rotary tables)
            owner, _, leaf = name.rpartition(".")
            fresh.get_submodule(owner)._buffers[leaf] = buffer.clone()
        with torch.no_grad():
            args = _float(per_layer[1])
            same = _same(_first(original(hidden.float(), **args)), _first(fresh(hidden.float(), **args)))
    except Exception as error:  # noqa: BLE001 - the reason is reported
        return f"a layer rebuilt at a new index cannot run ({type(error).__name__}: {_line(error)})"
    return None if same is None else f"a layer computes otherwise at a new index ({same})"


# --- the replay ----------------------------------------------------------------------------------


Probe = tuple[torch.Tensor, list[dict[str, Any]]]
"""The first layer's input on a few tokens, and every layer's keyword arguments."""


def _probe(model: PreTrainedModel, arch: DecoderArchitecture, text: PretrainedConfig) -> Probe | str:
    """What the layers receive on a few tokens, from the model's own forward; or why it failed."""
    device = next(model.parameters()).device
    vocab = _config_int(text, "vocab_size") or PROBE_TOKENS + 1
    tokens = (torch.arange(1, PROBE_TOKENS + 1) % vocab).unsqueeze(0).to(device)
    try:
        with torch.no_grad():
            inputs = capture_inputs(model, arch.layers(model), tokens, batch_size=1, run_layers=True)
    except Exception as error:  # noqa: BLE001 - the reason is reported, not hidden
        return f"the model could not be run to check slicing ({type(error).__name__}: {_line(error)})"
    return inputs.hidden[0], next(iter(inputs.kwargs.values()))  # one batch, whatever its layout


def _replay(model: PreTrainedModel, arch: DecoderArchitecture, text: PretrainedConfig, probe: Probe | str
            ) -> dict[Dimension, str]:
    """Why each offered dimension fails the replay: the first layer of every kind, sliced to every
    other unit, must compute what it computes with the removed units zeroed."""
    dimensions = [d for d in (Dimension.FFN, Dimension.HEADS) if d in arch.dimensions]
    if isinstance(probe, str):
        return dict.fromkeys(dimensions, probe)
    hidden, per_layer = probe
    layers = arch.layers(model)
    kinds = list(getattr(text, "layer_types", None) or [])[: len(layers)]
    indices = sorted({0, *(kinds.index(kind) for kind in set(kinds))})
    failures: dict[Dimension, str] = {}
    for dimension in dimensions:
        for index in indices:
            reason = _replay_layer(arch, layers[index], dimension, hidden, per_layer[index])
            if reason:
                failures[dimension] = f"layer {index}: {reason}"
                break
    return failures


def _replay_layer(arch: DecoderArchitecture, layer: nn.Module, dimension: Dimension, hidden: torch.Tensor,
                  kwargs: dict[str, Any]) -> str | None:
    units = arch.units(layer, dimension)
    if units < 2:
        return None  # nothing can be removed, nothing to check
    keep = torch.arange(0, units, 2)
    zeroed, sliced = copy.deepcopy(layer).float(), copy.deepcopy(layer).float()
    args = _float(kwargs)
    try:
        with torch.no_grad():
            zero_removed_units(arch, zeroed, dimension, keep)
            arch.slice(sliced, dimension, keep.to(hidden.device))
            expected, actual = _first(zeroed(hidden.float(), **args)), _first(sliced(hidden.float(), **args))
    except Exception as error:  # noqa: BLE001 - a sliced layer that cannot run is the finding
        return f"the sliced layer fails ({type(error).__name__}: {_line(error)})"
    difference = _same(expected, actual)
    return None if difference is None else f"slicing {dimension.value} does not equal zeroing it ({difference})"


def _same(expected: torch.Tensor, actual: torch.Tensor) -> str | None:
    """``None`` where the two agree within :data:`TOLERANCE`, else their largest difference in words."""
    if expected.shape != actual.shape:
        return f"shapes {tuple(expected.shape)} and {tuple(actual.shape)}"
    difference = (expected - actual).abs().max()
    if torch.isfinite(difference) and difference <= TOLERANCE * expected.abs().max().clamp_min(1.0):
        return None
    return f"max difference {difference.item():.3g}"


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _float(value: Any) -> Any:
    """Floating tensors in ``value`` (nested in tuples, lists, dicts) as float32, like the copies."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_float(item) for item in value)
    if isinstance(value, dict):
        return {key: _float(item) for key, item in value.items()}
    return value


def _line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:160] + ("..." if len(text) > 160 else "")
