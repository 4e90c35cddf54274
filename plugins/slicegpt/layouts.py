"""Where each supported family keeps what rotate-and-slice touches, and its layers with shortcuts.

SliceGPT sees a decoder layer as one or two *blocks*: a norm, the projections that read the norm's
output, and the projections that write back into the residual stream. Llama-like and OPT layers
have two blocks in sequence (attention, then MLP); phi-2 has one, whose attention and MLP read the
same norm in parallel. Everything the algorithm does is expressed per block, so a family is only
its norms, embeddings and head, which parts of a layer each block holds, and the layer's forward
pass with a shortcut on each residual path. The layers and the projections are where the model's
architecture adapter finds them (derived from the model, :mod:`prunekit.plugins.discovery`): a
family's module paths are known in one place.

The forward passes below repeat the families' own (transformers 5) with one change: the residual
``x`` is added as ``shortcut(x)``, a ``d' x d'`` matrix mapping the stream from the basis of the
block's input to the basis of its output. Keyword arguments pass through untouched, so masks,
rotary embeddings and caches work as in the stock layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.nn import functional as F

from prunekit.errors import UsageError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from prunekit.architectures import Architecture


class LlamaShortcuts:
    """Llama, Mistral, Qwen2, Qwen3: attention block, then MLP block, each with a shortcut."""

    def attention_block(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out, _ = self.self_attn(hidden_states=self.input_layernorm(x), **kwargs)
        return self.attn_shortcut(x) + out

    def mlp_block(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.mlp_shortcut(x) + self.mlp(self.post_attention_layernorm(x))

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.mlp_block(self.attention_block(hidden_states, **kwargs))


class OPTShortcuts:
    """OPT (pre-norm variants): attention block, then the fc1/fc2 block, each with a shortcut."""

    def attention_block(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("use_cache", None)  # the stock layer consumes it rather than pass it on
        out, _ = self.self_attn(hidden_states=self.self_attn_layer_norm(x), **kwargs)
        return self.attn_shortcut(x) + F.dropout(out, p=self.dropout, training=self.training)

    def mlp_block(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = self.fc2(self.activation_fn(self.fc1(self.final_layer_norm(x))))
        return self.mlp_shortcut(x) + F.dropout(out, p=self.dropout, training=self.training)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.mlp_block(self.attention_block(hidden_states, **kwargs))


class PhiShortcuts:
    """phi-2: attention and MLP read one norm in parallel; one block, one shortcut."""

    def block(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        normed = self.input_layernorm(x)
        attn, _ = self.self_attn(hidden_states=normed, **kwargs)
        return self.shortcut(x) + self.resid_dropout(attn) + self.resid_dropout(self.mlp(normed))

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.block(hidden_states, **kwargs)


@dataclass(frozen=True)
class Block:
    """One residual block of a layer, as paths relative to the layer."""

    norm: str
    inputs: tuple[str, ...]
    """Linear modules that read the norm's output (their input features are the hidden width)."""
    outputs: tuple[str, ...]
    """Linear modules that write into the residual stream (their output features are the hidden width)."""
    shortcut: str
    """Name of the shortcut module on this block's residual path."""
    method: str
    """The method of the shortcut layer class that runs this block alone (keyword arguments of the layer)."""


ATTENTION, FFN = "attention", "ffn"


@dataclass(frozen=True)
class BlockSpec:
    """A block as a family describes it: its norm, which parts of the layer it holds, its shortcut.
    The parts' projections are the architecture adapter's (:func:`layout_for`)."""

    norm: str
    parts: tuple[str, ...]
    shortcut: str
    method: str


@dataclass(frozen=True)
class Family:
    """What rotate-and-slice needs of a family beyond its adapter: the embeddings, norms and head
    around the layers, how a layer's blocks are arranged, and its layer class with shortcuts."""

    name: str
    model_types: tuple[str, ...]
    embeddings: tuple[str, ...]
    """Embedding tables whose rows are summed into the residual stream (tokens, learned positions)."""
    final_norm: str
    head: str
    blocks: tuple[BlockSpec, ...]
    layernorm: bool
    """LayerNorm families: the stream is centred and the norms become RMSNorms (not stock)."""
    shortcuts: type

    def check(self, model: PreTrainedModel) -> None:
        """Reject variants of a supported family that this description does not cover."""
        config = model.config
        if self.name == "opt":
            if not config.do_layer_norm_before:
                raise UsageError("slicegpt supports pre-norm OPT models only (this one normalises after each block)")
            if config.word_embed_proj_dim != config.hidden_size:
                raise UsageError("slicegpt does not support OPT models with an embedding projection (project_in/out)")


@dataclass(frozen=True)
class Layout:
    """One model's family description with the module paths of its adapter filled in."""

    name: str
    layers: str
    embeddings: tuple[str, ...]
    final_norm: str
    head: str
    blocks: tuple[Block, ...]
    layernorm: bool
    shortcuts: type

    def layer_list(self, model: PreTrainedModel) -> nn.ModuleList:
        return model.get_submodule(self.layers)


_LLAMA = Family(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    embeddings=("model.embed_tokens",),
    final_norm="model.norm",
    head="lm_head",
    blocks=(BlockSpec("input_layernorm", (ATTENTION,), "attn_shortcut", "attention_block"),
            BlockSpec("post_attention_layernorm", (FFN,), "mlp_shortcut", "mlp_block")),
    layernorm=False,
    shortcuts=LlamaShortcuts,
)

_OPT = Family(
    name="opt",
    model_types=("opt",),
    embeddings=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
    final_norm="model.decoder.final_layer_norm",
    head="lm_head",
    blocks=(BlockSpec("self_attn_layer_norm", (ATTENTION,), "attn_shortcut", "attention_block"),
            BlockSpec("final_layer_norm", (FFN,), "mlp_shortcut", "mlp_block")),
    layernorm=True,
    shortcuts=OPTShortcuts,
)

_PHI = Family(
    name="phi",
    model_types=("phi",),
    embeddings=("model.embed_tokens",),
    final_norm="model.final_layernorm",
    head="lm_head",
    blocks=(BlockSpec("input_layernorm", (ATTENTION, FFN), "shortcut", "block"),),
    layernorm=True,
    shortcuts=PhiShortcuts,
)

FAMILIES = (_LLAMA, _OPT, _PHI)


def norms_per_layer(model: PreTrainedModel) -> int | None:
    """How many norm modules a decoder layer holds directly (the first module list with one entry
    per hidden layer is taken for the layers); ``None`` where no such list is found."""
    count = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and count:
            return sum("norm" in type(child).__name__.lower() for child in module[0].children())
    return None


SANDWICH_NORMS = (
    "their layers normalise each block's output as well as its input ({norms} norms per layer), and the "
    "scale of an output norm, between the block and the residual stream, cannot be folded into a weight, "
    "so the stream cannot be rotated exactly"
)


def layout_for(model: PreTrainedModel, architecture: Architecture | None = None) -> Layout:
    """The layout of ``model``: its family's description, with the layers and projections where
    ``architecture`` (by default the adapter the registry gives ``model``) finds them. A family
    not described here is a :class:`UsageError` naming the supported ones (and, for a family whose
    layers normalise their blocks' outputs, why it cannot be supported)."""
    model_type = getattr(model.config, "model_type", None)
    family = next((family for family in FAMILIES if model_type in family.model_types), None)
    if family is None:
        supported = ", ".join(t for family in FAMILIES for t in family.model_types)
        norms = norms_per_layer(model)
        reason = f": {SANDWICH_NORMS.format(norms=norms)}" if norms is not None and norms > 2 else ""
        raise UsageError(f"slicegpt does not support {model_type!r} models{reason}; supported: {supported}")
    family.check(model)
    if architecture is None:
        from prunekit.manager import get_plugins

        architecture = get_plugins().hooks([]).architecture_for(model)
    attention, layers = getattr(architecture, "attention", None), getattr(architecture, "layers_path", None)
    if attention is None or attention.fused or layers is None:
        raise UsageError(f"slicegpt needs the separate q/k/v projections of {model_type!r} layers, "
                         f"which their adapter ({type(architecture).__name__}) does not name")
    parts = {ATTENTION: ((attention.q, attention.k, attention.v), (attention.out,)),
             FFN: (tuple(architecture.ffn_inputs), (architecture.ffn_output,))}
    blocks = tuple(
        Block(spec.norm, tuple(path for part in spec.parts for path in parts[part][0]),
              tuple(path for part in spec.parts for path in parts[part][1]), spec.shortcut, spec.method)
        for spec in family.blocks)
    return Layout(family.name, layers, family.embeddings, family.final_norm, family.head, blocks,
                  family.layernorm, family.shortcuts)


_CLASSES: dict[tuple[type, type], type] = {}


def install_shortcuts(layer: nn.Module, layout: Layout, width: int) -> None:
    """Give ``layer`` a ``width x width`` shortcut per block and the forward pass that uses them.

    The layer keeps its modules and becomes an instance of a subclass of its own class whose
    ``forward`` is the layout's, so everything else about it (attributes, gradient checkpointing,
    ``layer_idx``) is unchanged.
    """
    weight = next(layer.parameters())
    for block in layout.blocks:
        layer.add_module(block.shortcut, nn.Linear(width, width, bias=False, dtype=weight.dtype, device=weight.device))
    base = type(layer)
    if not issubclass(base, layout.shortcuts):
        key = (base, layout.shortcuts)
        if key not in _CLASSES:
            _CLASSES[key] = type(f"Shortcut{base.__name__}", (layout.shortcuts, base), {"__module__": __name__})
        layer.__class__ = _CLASSES[key]
