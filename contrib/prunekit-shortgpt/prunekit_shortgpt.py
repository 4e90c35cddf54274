"""``shortgpt``: depth pruning by Block Influence (Men et al., 2024, "ShortGPT").

A decoder layer whose output hidden state points almost the same way as its input changes little
of what flows through the residual stream, so removing it costs little. Block Influence measures
exactly that on calibration text: ``BI_i = 1 - mean_t cos(x_i,t, x_i+1,t)``, the mean over every
token ``t`` of the cosine similarity between the hidden state entering layer ``i`` and the one
leaving it. The layers with the lowest BI are removed; prunekit's core keeps the top
``int((1 - ratio) * layers)`` by this score, drops the rest and rewrites ``num_hidden_layers``, so
the result is a stock checkpoint.

The hidden states are read with forward hooks on the decoder layers themselves, so the score is
the layer's own input and output in every model family (not a normalised final state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunekit import hookimpl
from prunekit.plugins.data import TRAINING_TEXT, describe, sample_windows, token_stream, training_text
from prunekit.errors import UsageError
from prunekit.payloads import Dimension, Importance, ScoreRequest

if TYPE_CHECKING:  # annotations only: importing torch on load would slow every `core plugins list`
    import torch

NAME = "shortgpt"
class ShortGPTOptions(BaseModel):
    """Settings of ``shortgpt`` under ``options: {shortgpt: {...}}`` (or ``-o shortgpt.KEY=VALUE``)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        default="",
        validate_default=True,
        description=(
            "Calibration text: a file, folder or Hub dataset, optionally with a [a%:b%] token range. "
            f"Empty: the {TRAINING_TEXT} excerpts shipped with prunekit, disjoint from the WikiText-2 "
            "text its perplexity evaluation reads."
        ),
    )
    samples: int = Field(default=8, ge=1, description="Calibration windows, drawn at seeded random offsets.")
    length: int = Field(default=512, ge=2, description="Tokens per calibration window.")
    batch_size: int = Field(default=4, ge=1, description="Windows per forward pass.")
    text_field: str = Field(default="text", description="The text field of JSON or Hub data.")

    @field_validator("data")
    @classmethod
    def _default_data(cls, value: str) -> str:
        """Resolve the default now, so that the report records the file that was actually read."""
        return value or training_text()


@hookimpl
def plugin_options() -> type[BaseModel]:
    return ShortGPTOptions


def block_influence(model: torch.nn.Module, layers: torch.nn.ModuleList, batches: list[torch.Tensor]) -> torch.Tensor:
    """``1 - mean cos(input, output)`` of every layer over every token of ``batches`` (float64)."""
    import torch
    import torch.nn.functional as F

    similarity = torch.zeros(len(layers), dtype=torch.float64)
    inputs: dict[int, torch.Tensor] = {}

    def record_input(index: int):
        def hook(module, args, kwargs):
            inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def compare_output(index: int):
        def hook(module, args, kwargs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            cosine = F.cosine_similarity(inputs.pop(index).float(), hidden.float(), dim=-1)
            similarity[index] += cosine.double().sum().cpu()

        return hook

    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(record_input(index), with_kwargs=True))
        handles.append(layer.register_forward_hook(compare_output(index), with_kwargs=True))
    device = next(model.parameters()).device
    tokens = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                # the decoder stack alone: the LM head's logits would cost a fifth of a small model's time
                model.base_model(input_ids=batch.to(device), use_cache=False)
                tokens += batch.numel()
    finally:
        for handle in handles:
            handle.remove()
    return 1 - similarity / tokens


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    options = ShortGPTOptions.model_validate(request.options(NAME))
    if request.tokenizer is None:
        raise UsageError(f"{NAME} scores layers on calibration text and needs the model's tokenizer")
    stream = token_stream(request.tokenizer, options.data, text_field=options.text_field)
    windows = sample_windows(stream, options.length, options.samples, seed=request.config.seed)
    layers = request.architecture.layers(request.model)
    influence = block_influence(request.model, layers, list(windows.split(options.batch_size)))
    return [
        Importance(
            Dimension.LAYERS,
            [score.reshape(1) for score in influence],
            report={
                "criterion": "block influence: 1 - cos(layer input, layer output), mean over tokens",
                "block_influence": [round(score, 6) for score in influence.tolist()],
                "data": describe(options.data, windows.numel(), text_field=options.text_field),
                "samples": options.samples,
                "length": options.length,
            },
        )
    ]

