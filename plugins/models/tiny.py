"""Tiny random-weight models of every causal-LM family, for tests and smoke runs (``tiny-<family>``).

Each is a real transformers model of its family built from a small config (2 layers, hidden 64,
FFN 128, 4 heads, 2 KV groups where the family has them) with seeded weights, and a byte-level
tokenizer built in memory, so nothing is downloaded. The families of :data:`FAMILIES` have
hand-written configs, which every slicing test runs on; any other family ``AutoModelForCausalLM``
maps gets its default config with the same sizes written in (:func:`shrunk_config`), which is how
the coverage test reaches all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    PhiConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from prunekit.plugins.discovery.derive import FFN_FIELDS
from prunekit.plugins.surgery import is_int
from prunekit.errors import UsageError

HIDDEN, FFN, LAYERS, HEADS, POSITIONS = 64, 128, 2, 4, 1024
SPECIAL = "<|endoftext|>"


def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: one token per byte plus ``<|endoftext|>`` (id 0), 257 in all."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {SPECIAL: 0, **{char: index + 1 for index, char in enumerate(alphabet)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL
    )


VOCAB = 257
TOKENS = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def _llama_like(cls: type[PretrainedConfig]) -> Callable[[], PretrainedConfig]:
    return lambda: cls(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=2, head_dim=HIDDEN // HEADS, max_position_embeddings=POSITIONS, **TOKENS,
    )


CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": _llama_like(LlamaConfig),
    "mistral": _llama_like(MistralConfig),
    "qwen2": _llama_like(Qwen2Config),
    "qwen3": _llama_like(Qwen3Config),
    "phi": lambda: PhiConfig(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=HEADS, max_position_embeddings=POSITIONS, **TOKENS,
    ),
    "opt": lambda: OPTConfig(
        hidden_size=HIDDEN, ffn_dim=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        word_embed_proj_dim=HIDDEN, max_position_embeddings=POSITIONS, **TOKENS,
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        max_position_embeddings=POSITIONS, **TOKENS,
    ),
    "gpt2": lambda: GPT2Config(
        n_embd=HIDDEN, n_inner=FFN, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS, **TOKENS,
    ),
}
FAMILIES = tuple(CONFIGS)


SHRUNK_FFN = 96
SHRUNK: dict[str, int] = {
    "hidden_size": HIDDEN, "n_embd": HIDDEN, "d_model": HIDDEN,
    # not a multiple of the hidden width, so that no FFN half or double looks like a hidden-width projection
    **dict.fromkeys(FFN_FIELDS, SHRUNK_FFN),  # the fields the derived adapter reads the FFN width from
    "num_hidden_layers": LAYERS, "n_layer": LAYERS, "n_layers": LAYERS, "num_layers": LAYERS,
    "num_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS,
    "num_key_value_heads": 2, "head_dim": HIDDEN // HEADS, "rotary_dim": HIDDEN // HEADS // 2,
    "max_position_embeddings": POSITIONS, "n_positions": POSITIONS, "vocab_size": VOCAB,
    "encoder_layers": LAYERS, "decoder_layers": LAYERS, "encoder_attention_heads": HEADS,
    "decoder_attention_heads": HEADS, "encoder_ffn_dim": SHRUNK_FFN, "decoder_ffn_dim": SHRUNK_FFN,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": SHRUNK_FFN, "emb_dim": HIDDEN, "dim_ff": SHRUNK_FFN, "dim_head": HIDDEN // HEADS,
    # multi-head latent attention (DeepSeek V2/V3, MiniCPM3): ranks and the split of each head
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 16,
    "qk_head_dim": 16,
    # Gemma 3n / 4: per-layer input embeddings, and the layers that share another's KV cache
    "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16, "num_kv_shared_layers": 0,
    "laurel_rank": 8,
}
"""Sizes written into a family's default config where it has an integer field of that name."""
OVERRIDES: dict[str, dict[str, Any]] = {
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},  # a pattern per pair of layers
    "reformer": {"axial_pos_embds_dim": [32, 32], "attn_layers": ["local", "lsh"]},  # must sum to hidden
    # its default names no rotary settings for the layer kinds it then asks for
    "cohere_compass_text": {"rope_parameters": {kind: {"rope_type": "default", "rope_theta": 10000.0}
                                                for kind in ("full_attention", "sliding_attention")}},
}
"""Fields a family's own validation ties to the sizes above, which it does not derive itself."""
UNSET = ("head_dim", "num_key_value_heads")
"""Fields some families' defaults leave ``None`` although their models need a number."""
LARGEST = 20_000_000
"""Parameters a shrunk model may have: beyond it, sizes the table above misses are still large."""


def shrunk_config(family: str) -> PretrainedConfig:
    """``family``'s default config rebuilt with the sizes of :data:`SHRUNK` (and its text config
    too, for a multimodal family), so that fields the constructor derives, such as
    ``layer_types``, follow the new depth; token ids point into the 257-token vocabulary."""
    from transformers import AutoConfig

    return _shrunk(type(AutoConfig.for_model(family)), **OVERRIDES.get(family, {}))


def _shrunk(cls: type[PretrainedConfig], **overrides: Any) -> PretrainedConfig:
    """``cls`` with shrunk sizes, its sub-configs (text, vision, audio towers) shrunk alike."""
    default = cls()
    defaults = default.to_dict()
    sizes: dict[str, Any] = {name: value for name, value in SHRUNK.items() if is_int(defaults.get(name))}
    sizes.update({name: SHRUNK[name] for name in UNSET if name in defaults and defaults[name] is None})
    if "qk_rope_head_dim" in sizes and "head_dim" in sizes:
        sizes["head_dim"] = sizes["qk_rope_head_dim"]  # the rotary part is what head_dim sizes there
    for name in getattr(cls, "sub_configs", {}) or {}:
        sub = getattr(default, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            sizes[name] = _shrunk(type(sub))
    sizes.update({name: 0 for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
                  if is_int(defaults.get(name))})
    if "layer_types" in defaults:
        sizes["layer_types"] = None  # derived again from the new depth
    if "is_decoder" in defaults:
        sizes["is_decoder"] = True  # encoder families (BERT...) run as causal decoders
    return cls(**sizes, **overrides)


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A float32 random-weight model of ``family``; the same seed gives the same weights."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if family in CONFIGS:
        config = CONFIGS[family]()
    elif family in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        config = shrunk_config(family)
        with torch.device("meta"):
            size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        if size > LARGEST:
            raise UsageError(f"no tiny model for family {family!r}: shrunk, it still has {size:,} parameters")
    else:
        raise UsageError(f"no tiny model for family {family!r}: not a causal-LM family of transformers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()
