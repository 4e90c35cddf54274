"""The text a recovery trains on, cut into fixed-length sequences, and the held-out part of it.

Text comes through :mod:`prunekit.plugins.data`, the same pipeline calibration uses. The default is the
OpenStax excerpt shipped with prunekit (:func:`prunekit.plugins.data.training_text`), never the
WikiText-2 text perplexity is measured on: a model fine-tuned on WikiText learns its format in a
few steps, and that adaptation would pass for recovered quality (docs/benchmarks.md measures it).

The held-out sequences are the *last* ones of the source, not a random sample: consecutive
windows of one article share vocabulary and topic, so holding out a contiguous tail keeps the
eval loss honest about text the training has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prunekit.errors import UsageError
from prunekit.plugins import data
from prunekit.plugins.training import options as training

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from prunekit.payloads import RecoverRequest


@dataclass
class Corpus:
    """Training and held-out sequences, ``[n, length]`` token ids each."""

    source: str
    train: torch.Tensor
    held_out: torch.Tensor
    split: str
    text_field: str

    def datasets(self) -> tuple[Dataset, Dataset]:
        """Both parts as ``datasets`` tables of ``input_ids`` and ``labels`` (the same ids: the
        causal-LM head shifts them itself), in the form ``Trainer`` reads."""
        from datasets import Dataset

        def table(ids: torch.Tensor) -> Dataset:
            rows = ids.tolist()
            return Dataset.from_dict({"input_ids": rows, "labels": rows}).with_format("torch")

        return table(self.train), table(self.held_out)

    @property
    def sequence_length(self) -> int:
        return self.train.shape[1]

    def report(self, trained: int) -> dict[str, Any]:
        """What the report says of the text: ``tokens`` is the ``trained`` tokens the training read (repeats counted),
        ``train_tokens`` all the text it could read."""
        length = self.sequence_length
        return {
            **data.describe(self.source, trained, split=self.split, text_field=self.text_field),
            "sequence_length": length,
            "train_sequences": len(self.train),
            "held_out_sequences": len(self.held_out),
            "train_tokens": self.train.numel(),
            "held_out": "the last sequences of the source, never trained on",
        }


def load(tokenizer: PreTrainedTokenizerBase | None, source: str, *, length: int, held_out: int,
         split: str, text_field: str, plugin: str) -> Corpus:
    """Non-overlapping ``length``-token sequences of ``source``; the last ``held_out`` are held out. ``plugin`` names
    the recovery in errors."""
    if tokenizer is None:
        raise UsageError(f"{plugin} trains on text and needs the model's tokenizer, and this model has none")
    stream = data.token_stream(tokenizer, source, split=split, text_field=text_field)
    sequences = data.windows(stream, length)
    if len(sequences) <= held_out:
        raise UsageError(
            f"{plugin}: {source} gives {len(sequences)} sequences of {length} tokens, not enough to hold out "
            f"{held_out} (eval_sequences) and train on the rest; give more text or shorter sequences"
        )
    return Corpus(source, sequences[:-held_out], sequences[-held_out:], split, text_field)


def for_recovery(request: RecoverRequest, options: training.TrainingOptions, plugin: str) -> tuple[Corpus, bool]:
    """The text ``plugin`` trains ``request.model`` on (``options.data``, else the packaged training text), cut by the
    options' sequence length and held-out count or the defaults of the model's device; and whether that device is a
    GPU."""
    model = request.model
    on_gpu = next(model.parameters()).device.type == "cuda"
    length = training.sequence_length(options, plugin, on_gpu=on_gpu,
                                      max_positions=getattr(model.config, "max_position_embeddings", None))
    text = load(request.tokenizer, options.data or data.training_text(), length=length,
                held_out=training.eval_sequences(options, on_gpu=on_gpu), split=options.split,
                text_field=options.text_field, plugin=plugin)
    return text, on_gpu
