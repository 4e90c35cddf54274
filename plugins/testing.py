"""Test helpers for plugin authors, loaded by pytest as the ``prunekit`` plugin (entry point ``pytest11``):
the fixtures ``prunekit_plugins``, ``register_plugin``, ``tiny_model`` and ``logits_probe`` (docs/api.md).

Imports stay inside the fixtures so that loading this plugin costs pytest nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.manager import Plugins

__all__ = ["prunekit_plugins", "register_plugin", "tiny_model", "logits_probe"]


@pytest.fixture
def prunekit_plugins() -> Plugins:
    """The process-wide plugin registry that ``core`` commands use."""
    from prunekit.manager import get_plugins

    return get_plugins()


@pytest.fixture
def register_plugin(prunekit_plugins: Plugins) -> Iterator[Callable[[object, str], None]]:
    """``register_plugin(obj, name)`` registers a plugin for one test only, so a test can run ``core run
    --plugins name`` in-process and check that its hooks were called."""
    names: list[str] = []

    def register(plugin: object, name: str) -> None:
        prunekit_plugins.register(plugin, name=name)
        names.append(name)

    yield register
    for name in reversed(names):
        prunekit_plugins.unregister(name)


@pytest.fixture
def logits_probe(register_plugin: Callable[[object, str], None]) -> Callable[..., object]:
    """``logits_probe(ids, name="probe")`` registers an evaluator that keeps the model's logits on ``ids`` at each
    stage (``probe.logits["before"]``, ``["after"]``), for exactness tests of a run's saved model against the one
    it measured. Named alone in a run (``--plugins pruner,probe``), it is also its only evaluator: a fast run."""
    import torch

    from prunekit import hookimpl
    from prunekit.payloads import EvalRequest, Metrics

    class LogitsProbe:
        def __init__(self, ids: torch.Tensor) -> None:
            self.ids = ids
            self.logits: dict[str, torch.Tensor] = {}

        @hookimpl
        def evaluate(self, request: EvalRequest) -> Metrics:
            with torch.no_grad():
                self.logits[request.stage] = request.model(self.ids).logits
            return Metrics(extra={"probe": 0.0})

    def register(ids: torch.Tensor, name: str = "probe") -> LogitsProbe:
        probe = LogitsProbe(ids)
        register_plugin(probe, name)
        return probe

    return register


@pytest.fixture
def tiny_model(prunekit_plugins: Plugins) -> Callable[..., PreTrainedModel]:
    """``tiny_model(family="llama", seed=0)``: a seeded random-weight model of any causal-LM family, small enough
    for fast tests: the one ``--model tiny-<family>`` names, built by the plugin providing that name."""
    def factory(family: str = "llama", seed: int = 0) -> PreTrainedModel:
        source = prunekit_plugins.model_source(f"tiny-{family}")
        if source is None or source.build is None:
            raise LookupError(f"no installed plugin builds the model tiny-{family}")
        return source.build(seed)

    return factory
