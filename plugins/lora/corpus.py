"""The text recovery trains on, cut into fixed-length sequences, and the held-out part of it.

Text comes through :mod:`prunekit.plugins.data`, the same pipeline calibration uses. The default is the
second half of WikiText-2's test file in the shared data folder (``wikitext2.test.raw[50%:]``):
prunekit's perplexity evaluator reads the first half, so the model is never trained on the text
it is measured on. Without that folder it is WikiText-2's train split from the Hub.

The held-out sequences are the *last* ones of the source, not a random sample: consecutive
windows of one article share vocabulary and topic, so holding out a contiguous tail keeps the
eval loss honest about text the adapter has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prunekit.plugins import data
from prunekit.errors import UsageError

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


def default_source() -> str:
    """The half of the packaged WikiText-2 file that perplexity does not read."""
    return data.default_text(data.TRAINING_HALF)


@dataclass
class Corpus:
    """Training and held-out sequences, ``[n, length]`` token ids each."""

    source: str
    train: torch.Tensor
    held_out: torch.Tensor

    def datasets(self) -> tuple[Dataset, Dataset]:
        """Both parts as ``datasets`` tables of ``input_ids`` and ``labels`` (the same ids: the
        causal-LM head shifts them itself), in the form ``Trainer`` reads."""
        from datasets import Dataset

        def table(ids: torch.Tensor) -> Dataset:
            rows = ids.tolist()
            return Dataset.from_dict({"input_ids": rows, "labels": rows}).with_format("torch")

        return table(self.train), table(self.held_out)

    def report(self) -> dict[str, Any]:
        length = self.train.shape[1]
        facts: dict[str, Any] = {
            "source": self.source,
            "sequence_length": length,
            "train_sequences": len(self.train),
            "held_out_sequences": len(self.held_out),
            "train_tokens": self.train.numel(),
            "held_out": "the last sequences of the source, never trained on",
        }
        if self.source.endswith(data.DEFAULT_TEXT + data.TRAINING_HALF):
            facts["disjoint_from_evaluation"] = (
                f"trained on {data.DEFAULT_TEXT}{data.TRAINING_HALF} only; the perplexity evaluator's default "
                f"text is {data.DEFAULT_TEXT}{data.EVALUATION_HALF}, which no training sequence overlaps"
            )
        return facts


def load(tokenizer: PreTrainedTokenizerBase | None, source: str, *, length: int, held_out: int,
         split: str, text_field: str) -> Corpus:
    """Non-overlapping ``length``-token sequences of ``source``; the last ``held_out`` are held out."""
    if tokenizer is None:
        raise UsageError("lora trains on text and needs the model's tokenizer, and this model has none")
    stream = data.token_stream(tokenizer, source, split=split, text_field=text_field)
    sequences = data.windows(stream, length)
    if len(sequences) <= held_out:
        raise UsageError(
            f"lora: {source} gives {len(sequences)} sequences of {length} tokens, not enough to hold out "
            f"{held_out} (eval_sequences) and train on the rest; give more text or shorter sequences"
        )
    return Corpus(source, sequences[:-held_out], sequences[-held_out:])
