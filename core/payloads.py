"""Typed payloads that travel through prunekit's hooks.

Every hook takes one request object and returns one result object (or ``None`` to let another plugin answer): one
argument keeps hook signatures stable, since a new field breaks no plugin that does not read it. The hooks' use of
them: :mod:`prunekit.hookspecs`; every field's row: docs/api.md (a test keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from prunekit.architectures import Architecture
    from prunekit.config import RunConfig
    from prunekit.hooks import Hooks
    from prunekit.output import Params, Report
    from prunekit.uncompressed import UncompressedLayers

__all__ = [
    "Dimension", "ScoreRequest", "Importance", "ModelSlice", "RestoreRequest", "SliceRequest", "RecoverRequest",
    "Recovery", "EvalRequest", "ReportRequest", "Metrics", "SCALAR_METRICS", "ModelSource", "StreamRequest",
    "StreamedRun",
]


class _Options:
    """``options(plugin)`` of a request that carries the run config."""

    config: RunConfig

    def options(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings from the run config (``options: {plugin: {...}}``), as a fresh dict."""
        return dict(self.config.options.get(plugin, {}))


class Dimension(str, Enum):
    """A structural dimension of a decoder layer that a pruner can shrink."""

    FFN = "ffn"
    """FFN intermediate channels (rows of gate/up or fc1, columns of down or fc2)."""
    HEADS = "heads"
    """Attention heads; under grouped-query attention one unit is a KV group with its query heads."""
    LAYERS = "layers"
    """Whole decoder layers (depth): a pruner gives each layer one score, and the core keeps the top ``int((1 - ratio)
    * layers)`` layers of the model rather than units within a layer."""
    HIDDEN = "hidden"
    """The residual-stream width the embeddings, every layer and the head share. Only a whole-model slicer
    (:func:`~prunekit.hookspecs.slice_model`, e.g. SliceGPT) shrinks it; units are directions of the stream."""


@dataclass
class ScoreRequest(_Options):
    """What a pruner gets in :func:`~prunekit.hookspecs.score_importance` (a whole-model slicer in ``slice_model``)."""

    model: PreTrainedModel
    architecture: Architecture
    config: RunConfig
    tokenizer: PreTrainedTokenizerBase | None = None
    """The model's tokenizer, for pruners that score on calibration text."""

    @property
    def ratio(self) -> float:
        """Fraction of each targeted dimension to remove, in [0, 1)."""
        return self.config.ratio


@dataclass
class Importance:
    """A pruner's verdict on one dimension: a score per unit per layer, higher means keep."""

    dimension: Dimension
    scores: list[torch.Tensor]
    """One 1-D tensor per decoder layer, as long as that layer has units of ``dimension`` (for
    :attr:`Dimension.LAYERS`, one value: the layer's own score)."""
    keep_counts: list[int] | None = None
    """Units to keep per layer, when the pruner decides them itself. ``None`` keeps ``int((1 - ratio) * units)`` in
    every layer, which is what a stock config can express. Not used with :attr:`Dimension.LAYERS`."""
    report: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts for the run report (settings, learning curve, timings)."""


@dataclass
class ModelSlice:
    """What a whole-model slicer did, in :func:`~prunekit.hookspecs.slice_model`."""

    dimension: Dimension
    stock: bool
    """Whether the sliced model is still a stock architecture that ``from_pretrained`` loads; if not, its config
    carries ``prunekit_structure`` and it loads with ``prunekit.load(DIR)``."""
    report: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts for the run report (settings, calibration, timings)."""


@dataclass
class RestoreRequest:
    """A model built from a non-stock checkpoint's config, in :func:`~prunekit.hookspecs.restore_structure`."""

    model: PreTrainedModel
    structure: dict[str, Any]
    """The config's ``prunekit_structure`` entry as its writer saved it; ``plugin`` names the writer."""


@dataclass
class SliceRequest:
    """One decoder layer to shrink, in :func:`~prunekit.hookspecs.slice_layer`."""

    model: PreTrainedModel
    architecture: Architecture
    layer_index: int
    keep: dict[Dimension, torch.Tensor]
    """Sorted indices (int64) of the units to keep, per dimension to slice."""


@dataclass
class RecoverRequest(_Options):
    """A sliced model to repair, in :func:`~prunekit.hookspecs.recover`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    architecture: Architecture
    config: RunConfig
    work_dir: Path
    """Scratch for checkpoints that let a killed run resume (trainer checkpoints). The pipeline removes it once it has
    kept the recovered model, which supersedes them."""
    output_dir: Path
    """The run's directory: what a plugin writes here stays with the result (LoRA's kept adapter)."""
    uncompressed: UncompressedLayers | None = None
    """The decoder layers as they were before slicing, one at a time (``uncompressed.layer(i, device)``), for
    compensation that fits sliced layers to the uncompressed ones; ``None`` when the run sliced no layer (ratio 0, or
    a whole-model slicer such as slicegpt)."""


@dataclass
class Recovery:
    """The result of recovery: the repaired model, with any adapters merged into its weights."""

    model: PreTrainedModel
    report: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts for the run report (settings, loss curves)."""


@dataclass
class EvalRequest(_Options):
    """A model to measure, in :func:`~prunekit.hookspecs.evaluate`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    config: RunConfig
    stage: Literal["before", "after", "recovery"]
    """``before`` is the uncompressed model, ``after`` the compressed one; ``recovery`` a model between recovery
    steps, where only cheap measures that change with the weights (perplexity) are wanted: others return ``None``."""


@dataclass
class ReportRequest:
    """A finished run's report to write out, in :func:`~prunekit.hookspecs.render_report`."""

    report: Report
    output_dir: Path
    """The run directory: ``model/`` is in place, ``report.json`` not yet written."""


SCALAR_METRICS = ("perplexity", "loss", "bits_per_byte", "word_perplexity")
"""The fields of :class:`Metrics` that hold one number each, in the order reports show them."""


@dataclass
class Metrics:
    """Measurements of one model. Each evaluator fills the parts it measures; the core merges them."""

    perplexity: float | None = None
    loss: float | None = None
    """Mean token cross-entropy (nats) on the perplexity text, ``perplexity == exp(loss)``: the "test loss" that
    compression laws fit."""
    bits_per_byte: float | None = None
    """The same text's cross-entropy per UTF-8 byte, in bits: unlike ``perplexity`` and ``loss`` (per token), comparable
    between models whose tokenizers differ."""
    word_perplexity: float | None = None
    """The same text's perplexity per whitespace-separated word (lm-eval's wikitext ``word_perplexity``)."""
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{task: {metric: value}}``, lm-eval's task and metric names."""
    primary_metric: dict[str, str] = field(default_factory=dict)
    """The metric that scores each task in averages and retention (e.g. ``acc_norm`` for PIQA, ``acc`` for WinoGrande,
    as the pruning papers average them)."""
    latency: dict[str, float] = field(default_factory=dict)
    """Speed and memory. A key ending in ``_tokens_per_s`` is a throughput (median of repeated runs): the report
    divides after by before to give the speedup."""
    extra: dict[str, float] = field(default_factory=dict)
    """Anything else a third-party evaluator measures, by a name it owns."""
    details: dict[str, Any] = field(default_factory=dict)
    """How each evaluator measured (data, lengths, versions, protocol), by its name; not compared between stages. An
    evaluator's section may hold ``stderr: {task: {metric: standard error}}`` and ``chance: {task: accuracy of
    guessing}``: the report gives the tasks' scores with them, and their retention above chance."""


@dataclass
class ModelSource:
    """A model name a plugin provides, in :func:`~prunekit.hookspecs.model_source`: how the model loads, and what a
    compressed model's card says it was. Exactly one of ``checkpoint`` and ``build`` is given."""

    checkpoint: Callable[[], Path] | None = None
    """Returns the model's Hugging Face checkpoint directory, made on first use (converted or downloaded): called only
    when the model loads, never to write a card. The directory then loads as a local one does."""
    build: Callable[[int], PreTrainedModel] | None = None
    """Builds the model in memory from a seed (random weights; fixed ones ignore it): ``--model`` builds with seed 0,
    the ``tiny_model`` fixture with the seed it is given. A compressed model is saved in the dtype it is built in."""
    tokenizer: Callable[[], PreTrainedTokenizerBase] | None = None
    """Builds the tokenizer of a model given by ``build`` (a checkpoint's is read from its directory)."""
    base_model: str | None = None
    """The Hub id of the model, for a compressed model card's ``base_model``."""
    license: str | None = None
    """Its licence as the Hub names it (``apache-2.0``, ``gemma``), for the card."""

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.build is None):
            raise TypeError("a ModelSource gives either checkpoint or build, not both or neither")


@dataclass
class StreamRequest(_Options):
    """A ``--stream`` run, in :func:`~prunekit.hookspecs.compress_streaming`."""

    config: RunConfig
    hooks: Hooks
    """The run's hooks, for its pruner's ``score_importance`` and the ``slice_layer`` chain."""
    target: Path
    """The run's ``model/``, to write whole or not at all."""
    stage: Callable[[str], AbstractContextManager[None]]
    """``with request.stage("score"):`` times a stage and measures its memory for the report."""


@dataclass
class StreamedRun:
    """What a streamed compression did, for the report."""

    params: Params
    pruning: dict[str, Any]
    stock: bool
    source: Path
    """The checkpoint directory it read."""
