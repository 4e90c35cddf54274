"""``generation``: a short greedy continuation of one prompt, before and after, to read side by side.

Perplexity and accuracy say how much a compressed model lost; a few words of its own text show
what that loss looks like, which is what a person trying the result first asks. Greedy decoding
(no sampling) makes the text a function of the weights alone, so before and after differ only
where compression changed the model. The text is recorded under ``details`` (it is not a metric,
and nothing compares it numerically).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl
from prunekit.errors import UsageError
from prunekit.payloads import EvalRequest, Metrics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

NAME = "generation"


class GenerationOptions(BaseModel):
    """Settings of ``generation`` under ``options: {generation: {...}}``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(default="The capital of France is", min_length=1, description="The text to continue.")
    new_tokens: int = Field(default=24, gt=0, description="Tokens generated, greedily.")


def continuation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, new_tokens: int) -> str:
    """The text ``model`` adds to ``prompt`` under greedy decoding, end-of-sequence allowed."""
    import torch

    device = next(model.parameters()).device
    encoded = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)


@hookimpl
def plugin_options() -> type[BaseModel]:
    return GenerationOptions


@hookimpl
def evaluate(request: EvalRequest) -> Metrics | None:
    options = GenerationOptions.model_validate(request.options(NAME))
    if request.stage == "recovery":  # between recovery steps only perplexity is compared
        return None
    if request.tokenizer is None:
        if NAME in request.config.plugins:
            raise UsageError(f"generation needs a tokenizer, and model {request.config.model!r} has none")
        return None
    text = continuation(request.model, request.tokenizer, options.prompt, options.new_tokens)
    return Metrics(details={NAME: {"prompt": options.prompt, "text": text, "new_tokens": options.new_tokens,
                                   "decoding": "greedy"}})
