"""Tiny random-weight models of every supported family, for tests and smoke runs (``tiny-<family>``).

Each is a real transformers model of its family built from a small config (2 layers, hidden 64,
FFN 128, 4 heads; the Llama-like families use 2 KV groups so grouped-query attention is exercised)
with seeded weights, and a byte-level tokenizer built in memory, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

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

from prunekit.errors import UsageError

PREFIX = "tiny-"
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


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A float32 random-weight model of ``family``; the same seed gives the same weights."""
    if family not in CONFIGS:
        raise UsageError(f"no tiny model for family {family!r}; available: {', '.join(FAMILIES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(CONFIGS[family](), dtype=torch.float32)
    return model.eval()
