"""Running a model one decoder layer at a time: what each layer receives, captured from one forward.

Calibration-based pruners and recovery (``activation``, ``slicegpt``, ``refit``) replay the layers
on captured inputs, so memory stays near one layer's activations beyond the model; the derived
architecture adapter (:mod:`prunekit.plugins.discovery`) replays single layers to check that
slicing them is exact. The model's own forward builds the masks and position embeddings, so every
family and attention implementation is handled the way transformers handles it.

Only these built-in plugins run a model layer by layer, so the helper is theirs, not the core's;
it is no hook implementation, and the registry never imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.hooks import RemovableHandle
    from transformers import PreTrainedModel


def by_keyword(layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A layer's arguments after the hidden states, all by keyword (GPT-2 passes some by position)."""
    if not args:
        return kwargs
    signature = inspect.signature(type(layer).forward)
    bound = signature.bind(layer, None, *args, **kwargs).arguments
    named: dict[str, Any] = {}
    for name, value in list(bound.items())[2:]:  # after self and the hidden states
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
            raise RuntimeError(f"{type(layer).__name__} takes extra positional arguments; cannot replay them")
        else:
            named[name] = value
    return named


class _Captured(Exception):
    """Raised by the last layer's stand-in once every layer's arguments are recorded."""


@dataclass
class LayerInputs:
    """What the first decoder layer receives for each calibration batch, and the keyword
    arguments (attention mask, rotary embeddings, ...) every layer receives for a batch shape.

    ``hidden`` is the running activation: a pruner replaces each entry with the layer's output as
    it moves down the model, so only one layer's activations are held at a time.
    """

    hidden: list[torch.Tensor]
    kwargs: dict[tuple[int, ...], list[dict[str, Any]]]

    def layer_kwargs(self, layer_index: int, batch: torch.Tensor) -> dict[str, Any]:
        return self.kwargs[tuple(batch.shape[:2])][layer_index]

    def batches(self, layer_index: int) -> Iterator[tuple[int, torch.Tensor, dict[str, Any]]]:
        """``(position, hidden, kwargs)`` for every batch at ``layer_index``."""
        for position, hidden in enumerate(self.hidden):
            yield position, hidden, self.layer_kwargs(layer_index, hidden)

    def advance(self, layer_index: int, layer: nn.Module, handles: list[RemovableHandle]) -> None:
        """Run ``layer`` on every batch, each output replacing its input, then remove ``handles``
        (the hooks through which a pruner watched the layer run), even if a batch fails."""
        try:
            for position, hidden, kwargs in self.batches(layer_index):
                self.hidden[position] = layer(hidden, **kwargs)
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def capture_inputs(model: PreTrainedModel, layers: nn.ModuleList, samples: torch.Tensor, batch_size: int,
                   run_layers: bool = False) -> LayerInputs:
    """Run ``samples`` through the model with every decoder layer replaced by a recorder.

    Each recorder keeps the keyword arguments its layer would get and passes the hidden states
    through untouched; the last one stops the forward pass, so the final norm and the LM head
    (the largest activation of all, ``tokens x vocab``) never run. The model's own forward builds
    the masks and position embeddings, so every family and attention implementation is handled
    the way transformers handles it. The model is left exactly as it was.

    With ``run_layers`` the layers run as usual and a hook records what each receives: slower, but
    right for a family whose model reads more than the hidden states back from a layer (CPM-Ant
    unpacks a tuple), which is what the derived adapter's few-token probe needs.
    """
    # a streamed model (prunekit.plugins.streaming): its layers as modules, none loaded, and weights on meta until
    # its forward loads what runs before the first layer, onto its own device
    layers = getattr(layers, "unloaded", layers)
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    inputs = LayerInputs(hidden=[], kwargs={})
    for batch in samples.split(batch_size):
        calls: list[tuple[torch.Tensor, dict[str, Any]]] = []

        def record(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            calls.append((hidden, by_keyword(layers[index], args[1:], kwargs)))
            if index == len(layers) - 1:
                raise _Captured
            return hidden

        def recorder(index: int):
            return lambda *args, **kwargs: record(index, args, kwargs)

        def watcher(index: int):
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                record(index, args, kwargs)  # the layer then runs on its own inputs
            return hook

        handles = []
        for index, layer in enumerate(layers):
            if run_layers:
                handles.append(layer.register_forward_pre_hook(watcher(index), with_kwargs=True))
            else:
                layer.forward = recorder(index)
        try:
            model(input_ids=batch.to(device), use_cache=False)
        except _Captured:
            pass
        finally:
            for handle in handles:
                handle.remove()
            for layer in layers if not run_layers else ():
                del layer.forward
        if len(calls) != len(layers):
            raise RuntimeError(f"the model called {len(calls)} of its {len(layers)} decoder layers")
        inputs.hidden.append(calls[0][0])
        inputs.kwargs.setdefault(tuple(batch.shape), [kwargs for _, kwargs in calls])
    return inputs
