"""``discovery``: derive the architecture adapter of any decoder-only model from the model itself.

This is why no model family needs a plugin of its own: for a model whose ``model_type`` no
registered adapter claims, the core asks ``derive_architecture``, and this core plugin answers
with a :class:`~prunekit.plugins.discovery.adapter.DecoderArchitecture` placed from the model's
module structure and config, offering only the dimensions that slice exactly on a replay of the
model's own layers (:mod:`.derive`; docs/architectures.md lists what it finds for every family
transformers maps). It answers last, so another plugin's derivation is asked first.

The derivation imports torch and transformers, so it is imported when the hook is called:
loading the plugin (listing plugins, checking a run's options) needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit import hookimpl

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.architectures import Architecture


@hookimpl(trylast=True)
def derive_architecture(model: PreTrainedModel) -> Architecture:
    """The adapter found from ``model``'s structure, checked by replaying its layers."""
    from prunekit.plugins.discovery.derive import derive

    return derive(model)
