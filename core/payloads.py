"""Typed payloads that travel through prunekit's hooks.

Every hook takes exactly one request object and returns one result object (or ``None`` to let
another plugin answer). A single request argument keeps hook signatures stable: new fields can be
added to a request without breaking any plugin that does not read them. The reference for what
each hook does with these is the docstring of the hook in :mod:`prunekit.hookspecs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from prunekit.architectures import Architecture
    from prunekit.config import RunConfig
    from prunekit.search.objective import Objective
    from prunekit.search.quality import Reference
    from prunekit.search.space import Space
    from prunekit.uncompressed import UncompressedLayers


class Dimension(str, Enum):
    """A structural dimension of a decoder layer that a pruner can shrink."""

    FFN = "ffn"
    """FFN intermediate channels (rows of gate/up or fc1, columns of down or fc2)."""
    HEADS = "heads"
    """Attention heads; under grouped-query attention one unit is a KV group with its query heads."""
    LAYERS = "layers"
    """Whole decoder layers (depth): a pruner gives each layer one score, and the core keeps the
    top ``int((1 - ratio) * layers)`` layers of the model rather than units within a layer."""
    HIDDEN = "hidden"
    """The residual-stream width that the embeddings, every layer and the head share. Only a
    whole-model slicer (:func:`~prunekit.hookspecs.slice_model`, e.g. SliceGPT's rotate-and-slice)
    shrinks it; units are directions of the stream, not single coordinates."""


@dataclass
class ScoreRequest:
    """What a pruner gets in :func:`~prunekit.hookspecs.score_importance` (and a whole-model
    slicer in :func:`~prunekit.hookspecs.slice_model`)."""

    model: PreTrainedModel
    architecture: Architecture
    config: RunConfig
    tokenizer: PreTrainedTokenizerBase | None = None
    """The model's tokenizer, for pruners that score on calibration text."""

    @property
    def ratio(self) -> float:
        """Fraction of each targeted dimension to remove, in [0, 1)."""
        return self.config.ratio

    def options(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings from the run config (``options: {plugin: {...}}``)."""
        return dict(self.config.options.get(plugin, {}))


@dataclass
class Importance:
    """A pruner's verdict on one dimension: a score per unit per layer, higher means keep."""

    dimension: Dimension
    scores: list[torch.Tensor]
    """One 1-D tensor per decoder layer, as long as that layer has units of ``dimension``
    (for :attr:`Dimension.LAYERS`, one value: the layer's own score)."""
    keep_counts: list[int] | None = None
    """Units to keep per layer, when the pruner decides them itself. ``None`` keeps
    ``int((1 - ratio) * units)`` in every layer, which is what a stock config can express.
    Not used with :attr:`Dimension.LAYERS`."""
    report: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts for the run report (settings, learning curve, timings)."""


@dataclass
class ModelSlice:
    """What a whole-model slicer did, in :func:`~prunekit.hookspecs.slice_model`."""

    dimension: Dimension
    stock: bool
    """Whether the sliced model is still a stock architecture that ``from_pretrained`` loads; if
    not, its config carries ``prunekit_structure`` and it loads with ``prunekit.load(DIR)``."""
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
class RecoverRequest:
    """A sliced model to repair, in :func:`~prunekit.hookspecs.recover`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    architecture: Architecture
    config: RunConfig
    work_dir: Path
    """Scratch for checkpoints that let a killed run resume (trainer checkpoints). The pipeline
    removes it once it has kept the recovered model, which supersedes them."""
    output_dir: Path
    """The run's directory: what a plugin writes here stays with the result (LoRA's kept adapter)."""
    uncompressed: UncompressedLayers | None = None
    """The decoder layers as they were before slicing, one at a time (``uncompressed.layer(i,
    device)``), for compensation that fits sliced layers to the uncompressed ones; ``None`` when
    the run sliced no layer (ratio 0, or a whole-model slicer such as slicegpt)."""

    def options(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings from the run config (``options: {plugin: {...}}``)."""
        return dict(self.config.options.get(plugin, {}))


@dataclass
class Recovery:
    """The result of recovery: the repaired model, with any adapters merged into its weights."""

    model: PreTrainedModel
    report: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts for the run report (settings, loss curves)."""


@dataclass
class EvalRequest:
    """A model to measure, in :func:`~prunekit.hookspecs.evaluate`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    config: RunConfig
    stage: Literal["before", "after", "recovery"]
    """``before`` is the uncompressed model, ``after`` the compressed one; ``recovery`` a model
    between two recovery steps, where only cheap measures that change with the weights
    (perplexity) are wanted: other evaluators return ``None`` there."""

    def options(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings from the run config (``options: {plugin: {...}}``)."""
        return dict(self.config.options.get(plugin, {}))


@dataclass
class Metrics:
    """Measurements of one model. Each evaluator fills the parts it measures; the core merges them."""

    perplexity: float | None = None
    loss: float | None = None
    """Mean token cross-entropy (nats) on the perplexity text, ``perplexity == exp(loss)``: the
    "test loss" that compression laws fit."""
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{task: {metric: value}}``, lm-eval's task and metric names."""
    primary_metric: dict[str, str] = field(default_factory=dict)
    """The metric that scores each task in averages and retention (e.g. ``acc_norm`` for PIQA,
    ``acc`` for WinoGrande, as the pruning papers average them)."""
    latency: dict[str, float] = field(default_factory=dict)
    """Speed and memory. A key ending in ``_tokens_per_s`` is a throughput (median of repeated
    runs): the report divides after by before to give the speedup."""
    extra: dict[str, float] = field(default_factory=dict)
    """Anything else a third-party evaluator measures, by a name it owns."""
    details: dict[str, Any] = field(default_factory=dict)
    """How each evaluator measured (data, lengths, versions, protocol), by evaluator name; not
    compared between stages."""


@dataclass
class Candidate:
    """One compression configuration a search can try: a pruner and the fraction of each dimension
    it offers that it removes."""

    plugin: str
    ratios: dict[Dimension, float]

    @cached_property
    def key(self) -> str:
        """A stable name such as ``prunenet ffn=0.3``; equal configurations have equal keys."""
        order = list(Dimension)
        ratios = sorted(self.ratios.items(), key=lambda item: order.index(item[0]))
        return " ".join([self.plugin, *(f"{dim.value}={ratio:.4g}" for dim, ratio in ratios)])


@dataclass
class Trial:
    """One evaluation of a candidate: its latency and, where it met the budget, its quality on
    some of the search's evaluation batches."""

    candidate: Candidate
    feasible: bool
    """Whether the candidate met the latency budget (always ``True`` in a search without one)."""
    latency: float | None = None
    """Measured latency, in the unit of :attr:`SelectRequest.budget`."""
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per evaluation batch measured, the candidate's score on each quality task (mean token loss
    for ``perplexity``, the primary metric for a zero-shot task). Empty when the candidate missed
    the budget: its quality is not measured."""


@dataclass
class SelectRequest:
    """The state of a search, in :func:`~prunekit.hookspecs.select_ratio`."""

    candidates: list[Candidate]
    history: list[Trial]
    """Every finished evaluation, in order (several per candidate where a selector pulls it again)."""
    config: RunConfig
    objective: Objective
    """Turns per-task retention into the one score to maximise."""
    reference: Reference
    """The uncompressed model's score on every evaluation batch; retention is measured against it."""
    batches: int
    """Evaluation batches that make one full evaluation (batch indices ``0 .. batches - 1``)."""
    budget: float | None
    """The latency limit (a fraction of the uncompressed model's latency, or milliseconds for an
    absolute budget); ``None`` searches the quality/latency Pareto front instead."""
    latency: dict[str, float] = field(default_factory=dict)
    """Measured latency per candidate key, in the unit of ``budget``, for every candidate whose
    shape has been timed (candidates of equal shape share it)."""
    evaluations_left: int | None = None
    """Evaluation batches the search may still spend (``None``: no limit)."""
    pending: list[Candidate] = field(default_factory=list)
    """Candidates other workers of a shared study are evaluating right now."""
    seed: int = 0
    space: Space | None = None
    """The structure of the candidates: the axis of ratios per dimension, which candidates share a
    shape (and so a latency), and which is at least as compressed as which."""

    def options(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings from the run config (``options: {plugin: {...}}``)."""
        return dict(self.config.options.get(plugin, {}))

    @cached_property
    def _measured(self) -> dict[str, dict[int, dict[str, float]]]:
        merged: dict[str, dict[int, dict[str, float]]] = {}
        for trial in self.history:
            merged.setdefault(trial.candidate.key, {}).update(trial.scores)
        return merged

    def measured(self, candidate: Candidate) -> dict[int, dict[str, float]]:
        """Every batch measured for ``candidate`` so far, over all its trials."""
        return dict(self._measured.get(candidate.key, {}))

    def quality(self, candidate: Candidate) -> float | None:
        """The objective of ``candidate`` estimated from its measured batches (``None``: none yet)."""
        measured = self.measured(candidate)
        return self.objective(self.reference.retention(measured)) if measured else None

    def feasible(self, candidate: Candidate) -> bool | None:
        """Whether the candidate's measured latency meets the budget (``None``: not timed yet)."""
        latency = self.latency.get(candidate.key)
        if latency is None:
            return None
        return self.budget is None or latency <= self.budget


@dataclass
class Selection:
    """A selector's answer: what to evaluate next, and the best candidate so far."""

    next: Candidate | None
    """The candidate to evaluate next; ``None`` ends the search."""
    best: Candidate | None = None
    """The best feasible candidate so far (``None`` in a Pareto search, or before any is known)."""
    batches: list[int] | None = None
    """The evaluation batches to measure ``next`` on; ``None`` means all of them (a full evaluation)."""
    note: str = ""
    """Why the selector stopped (or what it is doing), for the search report."""
