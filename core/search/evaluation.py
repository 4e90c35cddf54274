"""Measuring candidates on the real model: latency with the ``latency`` evaluator's protocol and
quality on seeded evaluation batches with the evaluators' library functions.

The uncompressed model is loaded once and every pruner scores it once: scores do not depend on the
ratio (PruneNet's policy is trained once and reused at any ratio), so a candidate is a copy of the
model sliced by :func:`prunekit.pipeline.slice_by_importance`, exactly as a run slices it. The
pruners see the median ratio of the grid as the run's ratio (PruneNet trains its policy there when
none is cached), and the search's final run passes the same one.

It implements the :class:`~prunekit.search.driver.Evaluator` protocol of the search loop.

Quality tasks are those of the evaluators a run would use (``core run`` semantics: the ones named
in ``--plugins``, else every installed one): ``perplexity`` (mean token loss on a few windows of the
perplexity evaluator's text, at seeded random offsets) and, with ``--tasks``, every zero-shot task
(its primary metric on a seeded random sample of its examples). Batch ``k`` draws with the same
seed for every candidate, so all candidates, and the uncompressed reference, see the same examples.
"""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field

from prunekit.data import sample_windows, token_stream
from prunekit.errors import UsageError
from prunekit.models import load_model
from prunekit.payloads import Candidate, Dimension, ScoreRequest
from prunekit.pipeline import slice_by_importance
from prunekit.plugins.evaluators import perplexity, speed, zeroshot
from prunekit.search import budget as budgets
from prunekit.search.budget import Timing
from prunekit.search.quality import LOSS_TASK
from prunekit.search.space import DEFAULT_RATIOS, build_space

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.config import RunConfig
    from prunekit.manager import Plugins
    from prunekit.payloads import Importance

log = logging.getLogger(__name__)

PERPLEXITY = "perplexity"
ZEROSHOT = "zeroshot"
LATENCY = "latency"


class QualitySettings(BaseModel):
    """How much one evaluation batch measures; a full evaluation is ``batches`` of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batches: int = Field(default=4, ge=1, description="Evaluation batches in a full evaluation.")
    examples: int = Field(default=20, ge=1, description="Zero-shot examples per task in one batch.")
    windows: int = Field(default=2, ge=1, description="Perplexity windows in one batch.")
    window_length: int = Field(default=512, gt=1, description="Tokens per perplexity window.")


def batch_seed(seed: int, batch: int) -> int:
    """The seed of evaluation batch ``batch`` in a search seeded ``seed``."""
    return seed * 100_003 + batch


def score_ratio(grids: dict[object, list[float]]) -> float:
    """The ratio pruners score at: the median of the grid's non-zero ratios (the default grid's
    when ``--ratios`` gave none). Never 0 while any ratio is: a pruner that learns at its run's
    ratio (PruneNet trains and caches its policy there) learns nothing by keeping every unit."""
    ratios = sorted({r for grid in (grids.values() or [DEFAULT_RATIOS]) for r in grid if r > 0})
    return statistics.median_low(ratios) if ratios else 0.0


class ModelEvaluator:
    """Candidates of one model, measured for real."""

    def __init__(
        self,
        config: RunConfig,
        plugins: Plugins,
        pruners: list[str],
        evaluators: list[str],
        grids: dict[Dimension | None, list[float]],
        quality: QualitySettings,
        kind: budgets.LatencyKind,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.quality = quality
        self.kind = kind
        self.ratio = score_ratio(grids)
        self.latency_options = speed.LatencyOptions.model_validate(config.options.get(LATENCY, {}))
        self.loss = PERPLEXITY in evaluators
        self.tasks = list(config.tasks) if ZEROSHOT in evaluators else []
        if not self.loss and not self.tasks:
            raise UsageError(
                "the search has no quality to measure: give --tasks for zero-shot tasks, "
                "or let the perplexity evaluator take part"
            )
        loaded = load_model(config.model, dtype=config.dtype, device=config.device)
        self.dense, self.tokenizer = loaded.model, loaded.tokenizer
        if self.tokenizer is None:
            raise UsageError(f"the search measures quality on text, and model {config.model!r} has no tokenizer")
        self.architecture = plugins.hooks(pruners).architecture_for(self.dense)
        self.importances: dict[str, list[Importance]] = {pruner: self._score(pruner) for pruner in pruners}
        offered = {pruner: tuple(i.dimension for i in found) for pruner, found in self.importances.items()}
        layers = self.architecture.layers(self.dense)
        units = {
            dim: len(layers) if dim is Dimension.LAYERS else self.architecture.units(layers[0], dim)
            for dims in offered.values()
            for dim in dims
        }
        self.space = build_space(offered, units, grids)
        self._stream: torch.Tensor | None = None

    def run_config(self, candidate: Candidate) -> RunConfig:
        """The run that makes ``candidate``: its pruner at its ratios, with the run's other plugins."""
        extras = [name for name in self.config.plugins if name not in self.importances]
        return self.config.model_copy(
            update={"plugins": [candidate.plugin, *extras], "ratio": self.ratio, "ratios": dict(candidate.ratios)}
        )

    def _score(self, pruner: str) -> list[Importance]:
        config = self.config.model_copy(update={"plugins": [pruner], "ratio": self.ratio})
        log.info("search: %s scores the model", pruner)
        hooks = self.plugins.hooks([pruner])
        importances = hooks.score_importance(ScoreRequest(self.dense, self.architecture, config, tokenizer=self.tokenizer))
        if not importances:
            raise RuntimeError(f"{pruner} returned no importance for {self.config.model}")
        for importance in importances:
            self.architecture.require(importance.dimension)
        return importances

    def build(self, candidate: Candidate) -> PreTrainedModel:
        """A copy of the uncompressed model, sliced as ``candidate`` says."""
        model = copy.deepcopy(self.dense)
        slice_by_importance(
            self.importances[candidate.plugin],
            self.run_config(candidate),
            model,
            self.architecture,
            self.plugins.hooks([candidate.plugin]),
        )
        return model.eval()

    def milliseconds(self, model: PreTrainedModel) -> float:
        """``model``'s median latency of the searched kind under the ``latency`` protocol."""
        measured = speed.measure(model, self.latency_options, seed=self.config.seed)
        return budgets.milliseconds(measured, self.kind)

    def _text(self) -> torch.Tensor:
        if self._stream is None:
            options = perplexity.PerplexityOptions.model_validate(self.config.options.get(PERPLEXITY, {}))
            source = options.source or perplexity.default_source()
            self._stream = token_stream(self.tokenizer, source, split=options.split, text_field=options.text_field)
        return self._stream

    def scores(self, model: PreTrainedModel, batch: int) -> dict[str, float]:
        """``model``'s score per quality task on evaluation batch ``batch``."""
        seed = batch_seed(self.config.seed, batch)
        scores: dict[str, float] = {}
        if self.loss:
            context = perplexity.context_length(model)
            length = min(self.quality.window_length, context) if context else self.quality.window_length
            text = sample_windows(self._text(), length, self.quality.windows, seed)
            measured = perplexity.measure(model, text.reshape(-1), length=length, windows_count=self.quality.windows)
            scores[LOSS_TASK] = measured.loss
        if self.tasks:
            options = zeroshot.ZeroShotOptions.model_validate(self.config.options.get(ZEROSHOT, {}))
            result = zeroshot.score_tasks(
                model, self.tokenizer, self.tasks, sample=self.quality.examples, seed=seed, batch_size=options.batch_size
            )
            for task, metric in result.primary_metric.items():
                if task in result.groups:
                    continue  # a group's aggregate repeats its tasks
                if task == LOSS_TASK:
                    raise UsageError(f"a zero-shot task may not be called {LOSS_TASK!r} in a search")
                scores[task] = result.tasks[task][metric]
        return scores

    def reference(self, batches: Sequence[int]) -> dict[int, dict[str, float]]:
        return {batch: self.scores(self.dense, batch) for batch in batches}

    def prepare(self, candidate: Candidate) -> _Sliced:
        return _Sliced(self, candidate)


class _Sliced:
    """A candidate of a :class:`ModelEvaluator`, sliced on first use."""

    def __init__(self, evaluator: ModelEvaluator, candidate: Candidate) -> None:
        self._evaluator = evaluator
        self._candidate = candidate
        self._model: PreTrainedModel | None = None

    def _built(self) -> PreTrainedModel:
        if self._model is None:
            self._model = self._evaluator.build(self._candidate)
        return self._model

    def time(self) -> Timing:
        model = self._built()
        reference = self._evaluator.milliseconds(self._evaluator.dense)
        return Timing.single(self._evaluator.milliseconds(model), reference)

    def scores(self, batch: int) -> dict[str, float]:
        return self._evaluator.scores(self._built(), batch)
