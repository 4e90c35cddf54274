"""The built-in model families, registered through ``register_architectures`` like any plugin's.

Heads are offered only where the model reads ``config.head_dim``: OPT, GPT-NeoX and GPT-2 derive
the head width from ``hidden_size / num_attention_heads`` (GPT-NeoX and GPT-2 also fuse q, k, v
into one projection), so fewer heads there would need a non-stock config.
"""

from __future__ import annotations

from collections.abc import Callable

from prunekit import hookimpl
from prunekit.architectures import Architecture, AttentionLayout, DecoderArchitecture

LLAMA_ATTENTION = AttentionLayout("self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                  "self_attn.o_proj")
LLAMA_LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _llama_like(family: str) -> DecoderArchitecture:
    return DecoderArchitecture(
        family=family,
        model_types=(family,),
        layers_path="model.layers",
        ffn_inputs=("mlp.gate_proj", "mlp.up_proj"),
        ffn_output="mlp.down_proj",
        ffn_field="intermediate_size",
        lora_targets=LLAMA_LORA,
        attention=LLAMA_ATTENTION,
    )


ARCHITECTURES: tuple[DecoderArchitecture, ...] = (
    _llama_like("llama"),  # Llama 2/3, SmolLM, TinyLlama
    _llama_like("mistral"),
    _llama_like("qwen2"),  # Qwen2, Qwen2.5
    _llama_like("qwen3"),
    DecoderArchitecture(
        family="phi",
        model_types=("phi",),
        layers_path="model.layers",
        ffn_inputs=("mlp.fc1",),
        ffn_output="mlp.fc2",
        ffn_field="intermediate_size",
        lora_targets=("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
        attention=AttentionLayout("self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                  "self_attn.dense"),
    ),
    DecoderArchitecture(
        family="opt",
        model_types=("opt",),
        layers_path="model.decoder.layers",
        ffn_inputs=("fc1",),
        ffn_output="fc2",
        ffn_field="ffn_dim",
        lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    ),
    DecoderArchitecture(
        family="gpt_neox",
        model_types=("gpt_neox",),
        layers_path="gpt_neox.layers",
        ffn_inputs=("mlp.dense_h_to_4h",),
        ffn_output="mlp.dense_4h_to_h",
        ffn_field="intermediate_size",
        lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    ),
    DecoderArchitecture(
        family="gpt2",
        model_types=("gpt2",),
        layers_path="transformer.h",
        ffn_inputs=("mlp.c_fc",),  # Conv1D: weights stored [in, out]
        ffn_output="mlp.c_proj",
        ffn_field="n_inner",
        lora_targets=("c_attn", "c_proj", "c_fc"),
    ),
)


@hookimpl
def register_architectures(register: Callable[[Architecture], None]) -> None:
    for adapter in ARCHITECTURES:
        register(adapter)
