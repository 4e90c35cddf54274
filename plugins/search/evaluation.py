"""Measuring candidates on the real model, through the ``evaluate`` hook: latency by the ``latency``
evaluator, quality on seeded evaluation batches by ``perplexity`` and ``zeroshot``.

The uncompressed model is loaded once and every pruner scores it once: scores do not depend on the
ratio (PruneNet's policy is trained once and reused at any ratio), so a candidate is a copy of the
model sliced by :func:`prunekit.pipeline.slice_by_importance`, exactly as a run slices it. The
pruners see the median ratio of the grid as the run's ratio (PruneNet trains its policy there when
none is cached), and the search's final run passes the same one.

It implements the :class:`~prunekit.plugins.search.driver.Evaluator` protocol of the search loop.

Each evaluator is asked alone (:meth:`prunekit.hooks.Hooks.evaluate_one`), with the uncompressed
model as ``stage="before"`` and a candidate as ``"after"``, and with the settings of one evaluation
batch in its options, as a run passes them (``options.<evaluator>``): the user's own options of
that evaluator, with what the batch measures laid over them. Quality tasks are those of the
evaluators a run would use (``core run`` semantics: the ones named in ``--plugins``, else every
installed one): ``perplexity`` (mean token loss on a few windows of its text at seeded random
offsets, ``options.perplexity.sample``) and, with ``--tasks``, every zero-shot task (its primary
metric on a seeded random sample of its examples, ``options.zeroshot.sample``). Batch ``k`` is
measured with the same seed for every candidate, so all candidates, and the uncompressed
reference, see the same examples.
"""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from prunekit.errors import UsageError
from prunekit.models import load_model
from prunekit.payloads import Dimension, EvalRequest, ScoreRequest
from prunekit.pipeline import slice_by_importance
from prunekit.plugins.search import budget as budgets
from prunekit.plugins.search.budget import LATENCY, Timing
from prunekit.plugins.search.payloads import Candidate
from prunekit.plugins.search.quality import LOSS_TASK
from prunekit.plugins.search.space import DEFAULT_RATIOS, build_space

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.config import RunConfig
    from prunekit.manager import Plugins
    from prunekit.payloads import Importance, Metrics

log = logging.getLogger(__name__)

PERPLEXITY = "perplexity"
ZEROSHOT = "zeroshot"


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
        self.hooks = plugins.hooks(pruners)
        self.architecture = self.hooks.architecture_for(self.dense)
        self.importances: dict[str, list[Importance]] = {pruner: self._score(pruner) for pruner in pruners}
        offered = {pruner: tuple(i.dimension for i in found) for pruner, found in self.importances.items()}
        layers = self.architecture.layers(self.dense)
        units = {
            dim: len(layers) if dim is Dimension.LAYERS else self.architecture.units(layers[0], dim)
            for dims in offered.values()
            for dim in dims
        }
        self.space = build_space(offered, units, grids)

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

    def _measure(self, evaluator: str, request: EvalRequest) -> Metrics:
        metrics = self.hooks.evaluate_one(evaluator, request)
        if metrics is None:
            raise RuntimeError(f"the {evaluator} evaluator measured nothing for the search")
        return metrics

    def milliseconds(self, model: PreTrainedModel, stage: Literal["before", "after"]) -> float:
        """``model``'s median latency of the searched kind, measured by the ``latency`` evaluator."""
        request = EvalRequest(model, self.tokenizer, self.config, stage)
        return budgets.milliseconds(self._measure(LATENCY, request), self.kind)

    def batch_config(self, model: PreTrainedModel, batch: int) -> RunConfig:
        """The run config the quality evaluators measure batch ``batch`` under: its seed, and each
        evaluator's options with the batch's settings laid over the user's."""
        options = dict(self.config.options)
        if self.loss:
            context = getattr(model.config, "max_position_embeddings", None)  # as the evaluator reads it
            length = min(self.quality.window_length, context) if context else self.quality.window_length
            options[PERPLEXITY] = {
                **options.get(PERPLEXITY, {}),
                "length": length, "windows": self.quality.windows, "stride": None, "batch_size": 1, "sample": True,
            }
        if self.tasks:
            options[ZEROSHOT] = {**options.get(ZEROSHOT, {}), "sample": self.quality.examples}
        seed = batch_seed(self.config.seed, batch)
        return self.config.model_copy(update={"seed": seed, "limit": None, "options": options})

    def scores(self, model: PreTrainedModel, batch: int, stage: Literal["before", "after"]) -> dict[str, float]:
        """``model``'s score per quality task on evaluation batch ``batch``."""
        request = EvalRequest(model, self.tokenizer, self.batch_config(model, batch), stage)
        scores: dict[str, float] = {}
        if self.loss:
            scores[LOSS_TASK] = self._measure(PERPLEXITY, request).loss
        if self.tasks:
            result = self._measure(ZEROSHOT, request)
            groups = result.details.get(ZEROSHOT, {}).get("groups", {})
            for task, metric in result.primary_metric.items():
                if task in groups:
                    continue  # a group's aggregate repeats its tasks
                if task == LOSS_TASK:
                    raise UsageError(f"a zero-shot task may not be called {LOSS_TASK!r} in a search")
                scores[task] = result.tasks[task][metric]
        return scores

    def reference(self, batches: Sequence[int]) -> dict[int, dict[str, float]]:
        return {batch: self.scores(self.dense, batch, "before") for batch in batches}

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
        reference = self._evaluator.milliseconds(self._evaluator.dense, "before")
        return Timing.single(self._evaluator.milliseconds(model, "after"), reference)

    def scores(self, batch: int) -> dict[str, float]:
        return self._evaluator.scores(self._built(), batch, "after")
