"""Where each supported family keeps what rotate-and-slice touches, and its layers with shortcuts.

SliceGPT sees a decoder layer as one or two *blocks*: a norm, the projections that read the norm's
output, and the projections that write back into the residual stream. Llama-like and OPT layers
have two blocks in sequence (attention, then MLP); phi-2 has one, whose attention and MLP read the
same norm in parallel. Everything the algorithm does is expressed per block, so a family is only
module paths plus the layer's forward pass with a shortcut on each residual path.

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


@dataclass(frozen=True)
class Layout:
    """One family: paths from the model root, the blocks of a layer, and its shortcut layer class."""

    name: str
    model_types: tuple[str, ...]
    layers: str
    embeddings: tuple[str, ...]
    """Embedding tables whose rows are summed into the residual stream (tokens, learned positions)."""
    final_norm: str
    head: str
    blocks: tuple[Block, ...]
    layernorm: bool
    """LayerNorm families: the stream is centred and the norms become RMSNorms (not stock)."""
    shortcuts: type

    def layer_list(self, model: PreTrainedModel) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def check(self, model: PreTrainedModel) -> None:
        """Reject variants of a supported family that this layout does not describe."""
        config = model.config
        if self.name == "opt":
            if not config.do_layer_norm_before:
                raise UsageError("slicegpt supports pre-norm OPT models only (this one normalises after each block)")
            if config.word_embed_proj_dim != config.hidden_size:
                raise UsageError("slicegpt does not support OPT models with an embedding projection (project_in/out)")


_LLAMA = Layout(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    layers="model.layers",
    embeddings=("model.embed_tokens",),
    final_norm="model.norm",
    head="lm_head",
    blocks=(
        Block("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              ("self_attn.o_proj",), "attn_shortcut", "attention_block"),
        Block("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",),
              "mlp_shortcut", "mlp_block"),
    ),
    layernorm=False,
    shortcuts=LlamaShortcuts,
)

_OPT = Layout(
    name="opt",
    model_types=("opt",),
    layers="model.decoder.layers",
    embeddings=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
    final_norm="model.decoder.final_layer_norm",
    head="lm_head",
    blocks=(
        Block("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              ("self_attn.out_proj",), "attn_shortcut", "attention_block"),
        Block("final_layer_norm", ("fc1",), ("fc2",), "mlp_shortcut", "mlp_block"),
    ),
    layernorm=True,
    shortcuts=OPTShortcuts,
)

_PHI = Layout(
    name="phi",
    model_types=("phi",),
    layers="model.layers",
    embeddings=("model.embed_tokens",),
    final_norm="model.final_layernorm",
    head="lm_head",
    blocks=(
        Block("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.fc1"),
              ("self_attn.dense", "mlp.fc2"), "shortcut", "block"),
    ),
    layernorm=True,
    shortcuts=PhiShortcuts,
)

LAYOUTS = (_LLAMA, _OPT, _PHI)


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


def layout_for(model: PreTrainedModel) -> Layout:
    """The layout of ``model``'s family, or a :class:`UsageError` naming the supported ones (and,
    for a family whose layers normalise their blocks' outputs, why it cannot be supported)."""
    model_type = getattr(model.config, "model_type", None)
    for layout in LAYOUTS:
        if model_type in layout.model_types:
            layout.check(model)
            return layout
    supported = ", ".join(t for layout in LAYOUTS for t in layout.model_types)
    norms = norms_per_layer(model)
    reason = f": {SANDWICH_NORMS.format(norms=norms)}" if norms is not None and norms > 2 else ""
    raise UsageError(f"slicegpt does not support {model_type!r} models{reason}; supported: {supported}")


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
