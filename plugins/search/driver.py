"""The search loop: ask the selector, measure what it chose, record it in the study, repeat.

One step: the ``select_ratio`` plugin gets the state of the search (every finished evaluation,
the latency of every shape timed so far, what other workers are evaluating) and names the next
candidate and the evaluation batches to measure it on. The candidate's shape is timed unless a
candidate of the same shape was timed before; a candidate over the latency budget is recorded as
infeasible and its quality is not measured; otherwise it is scored on the batches it has not been
scored on yet. The selector ends the search by naming no next candidate.

Everything measured is in the Optuna study at once (a killed search loses only the trial it was
in) and in the search directory: ``batches.jsonl`` holds every batch scored, written as it is
measured, so that even the interrupted trial's finished batches are not measured again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from optuna.trial import TrialState

from prunekit.errors import UsageError
from prunekit.plugins.search.budget import LatencyBudget, Timing
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.payloads import Candidate, SelectRequest, Selection, Trial
from prunekit.plugins.search.quality import LOSS_TASK, Reference
from prunekit.plugins.search.study import SearchStudy, SelectorSampler, Snapshot, candidate_attrs, suggest, worker

if TYPE_CHECKING:
    from prunekit.config import RunConfig
    from prunekit.hooks import Hooks
    from prunekit.plugins.search.space import Space

log = logging.getLogger(__name__)

BATCHES_FILE = "batches.jsonl"
EVALUATIONS_FILE = "evaluations.jsonl"
CONFIRMING_RUNS = 3
"""Timings of the answer's shape before the search accepts it (the median counts)."""


class Measurer(Protocol):
    """One candidate, ready to be measured."""

    def time(self) -> Timing:
        """Its latency, and the uncompressed model's timed right before it."""

    def scores(self, batch: int) -> dict[str, float]:
        """Its score per quality task on evaluation batch ``batch``."""


class Evaluator(Protocol):
    """What a search measures: the real model (:mod:`prunekit.plugins.search.evaluation`), or a recorded
    table in the efficiency benchmark."""

    space: Space

    def reference(self, batches: Sequence[int]) -> dict[int, dict[str, float]]:
        """The uncompressed model's score per quality task on each batch."""

    def prepare(self, candidate: Candidate) -> Measurer:
        """The candidate, ready to be timed and scored."""


@dataclass
class Outcome:
    """Where a search stands when its selector has nothing more to evaluate."""

    selection: Selection
    history: list[Trial]
    reference: Reference | None
    """``None`` when the search stopped before measuring any quality."""
    timings: dict[str, Timing]
    evaluations: int
    """Evaluation batches measured (each candidate and batch counted once)."""
    latency: dict[str, float] = field(default_factory=dict)
    """Latency per candidate key, in the budget's unit, for every candidate whose shape was timed."""


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and make it durable before going on."""
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; a line cut off by a kill is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def evaluations_spent(history: Sequence[Trial]) -> int:
    """Distinct (candidate, batch) pairs measured: a repeat of a measured batch costs nothing."""
    return len({(trial.candidate.key, batch) for trial in history for batch in trial.scores})


class SearchLoop:
    """The loop of one worker of a search, over any :class:`Evaluator`."""

    def __init__(
        self,
        *,
        config: RunConfig,
        evaluator: Evaluator,
        hooks: Hooks,
        study: SearchStudy,
        budget: LatencyBudget | None,
        objective: Objective,
        batches: int,
        max_evaluations: float | None,
        directory: Path | None = None,
        announce: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.config = config
        self.evaluator = evaluator
        self.space = evaluator.space
        self.candidates = self.space.candidates()
        if not self.candidates:
            raise UsageError("the search space is empty: every ratio of --ratios is 0")
        self.hooks = hooks
        self.budget = budget
        self.objective = objective
        self.batches = batches
        self.max_batches = None if max_evaluations is None else int(round(max_evaluations * batches))
        self.directory = directory
        self.announce = announce
        self.sampler = SelectorSampler(self._choose, self.space)
        self.study = study
        study.study.sampler = self.sampler
        for number in study.fail_abandoned():
            announce(f"trial {number} was cut off by a killed search; marked failed")
        self.cache = self._read_cache()
        self._reference: Reference | None = None
        self._chosen_from: Snapshot | None = None  # the study the sampler's choice was made from

    # --- shared state ---------------------------------------------------------------------------

    def _read_cache(self) -> dict[tuple[str, int], dict[str, float]]:
        if self.directory is None:
            return {}
        return {(r["key"], int(r["batch"])): r["scores"] for r in read_lines(self.directory / BATCHES_FILE)}

    @property
    def reference(self) -> Reference:
        """The uncompressed model on every batch: from the study, or scored (once) when first needed."""
        if self._reference is None:
            stored = self.study.reference()
            if stored is None or sorted(stored) != list(range(self.batches)):
                self.announce(f"scoring the uncompressed model on {self.batches} evaluation batches")
                stored = self.evaluator.reference(range(self.batches))
                self.study.set_reference(stored)
            self._reference = Reference(stored, frozenset({LOSS_TASK}) & set(next(iter(stored.values()))))
        return self._reference

    def value(self, timing: Timing) -> float:
        """A timing in the unit selectors compare: ms for an absolute budget, else the fraction."""
        return timing.milliseconds if self.budget is not None and not self.budget.relative else timing.relative

    def feasible(self, timing: Timing) -> bool:
        return self.budget is None or self.value(timing) <= self.budget.limit

    def latency(self, timings: dict[str, Timing]) -> dict[str, float]:
        known = {}
        for candidate in self.candidates:
            timing = timings.get(self.space.structure(candidate))
            if timing is not None:
                known[candidate.key] = self.value(timing)
        return known

    def request(self, snapshot: Snapshot) -> SelectRequest:
        history = snapshot.history
        spent = evaluations_spent(history)
        return SelectRequest(
            candidates=self.candidates,
            history=history,
            config=self.config,
            objective=self.objective,
            reference=self.reference,
            batches=self.batches,
            budget=None if self.budget is None else self.budget.limit,
            latency=self.latency(self.study.timings()),
            evaluations_left=None if self.max_batches is None else max(0, self.max_batches - spent),
            pending=snapshot.pending,
            seed=self.config.seed,
            space=self.space,
        )

    def _choose(self, _study: object) -> Selection:
        self._chosen_from = self.study.snapshot()
        request = self.request(self._chosen_from)
        selection = self.hooks.call("select_ratio", request)
        if selection is None:
            raise UsageError(
                "no selector answered: the bandit needs --latency-budget; "
                "for a Pareto search without a budget use --plugins ...,optuna"
            )
        if selection.next is not None and request.evaluations_left == 0:
            selection = Selection(next=None, best=selection.best, note="the evaluation budget is spent")
        return selection

    # --- measuring ------------------------------------------------------------------------------

    def timing(self, candidate: Candidate) -> Timing:
        """The latency of ``candidate``'s shape: timed once, then shared by the study."""
        structure = self.space.structure(candidate)
        timing = self.study.timings().get(structure)
        return self.time(candidate, self.evaluator.prepare(candidate)) if timing is None else timing

    def time(self, candidate: Candidate, measurer: Measurer) -> Timing:
        """Time ``candidate``'s shape (once more), record it, and return all its runs."""
        structure = self.space.structure(candidate)
        run = measurer.time()
        timing = self.study.add_timing(structure, run)
        self.announce(
            f"timed {structure}: {run.milliseconds:.4g} ms ({run.relative:.3f} × uncompressed, "
            f"{run.reference_milliseconds:.4g} ms)" + (f"; median of {len(timing.runs)} runs {timing.relative:.3f}"
                                                       if len(timing.runs) > 1 else "")
        )
        return timing

    def confirm(self, candidate: Candidate) -> bool:
        """Time the shape of the answer once more unless it has :data:`CONFIRMING_RUNS` timings;
        ``True`` if it was timed now (its median latency may have crossed the budget, so the
        selector must be asked again)."""
        timing = self.study.timings().get(self.space.structure(candidate))
        if timing is not None and len(timing.runs) >= CONFIRMING_RUNS:
            return False
        self.time(candidate, self.evaluator.prepare(candidate))
        return True

    def time_fastest(self) -> list[tuple[Candidate, Timing]]:
        """Time the most compressed shapes, the only ones that can tell an unreachable budget."""
        return [(candidate, self.timing(candidate)) for candidate in self.space.fastest()]

    def evaluate(self, candidate: Candidate, batches: Sequence[int]) -> tuple[Timing, bool, dict[int, dict[str, float]]]:
        structure = self.space.structure(candidate)
        measurer = self.evaluator.prepare(candidate)
        timing = self.study.timings().get(structure)
        if timing is None:
            timing = self.time(candidate, measurer)
        feasible = self.feasible(timing)
        scores: dict[int, dict[str, float]] = {}
        if feasible:
            for batch in batches:
                cached = self.cache.get((candidate.key, batch))
                if cached is None:
                    cached = measurer.scores(batch)
                    self.cache[(candidate.key, batch)] = cached
                    if self.directory is not None:
                        append_line(self.directory / BATCHES_FILE, {"key": candidate.key, "batch": batch, "scores": cached})
                scores[batch] = cached
        return timing, feasible, scores

    def step(self, selection: Selection) -> Trial | None:
        """Evaluate the selection's next candidate in a new trial of the study (``None``: another
        worker took the same candidate since this one chose it, and this one gave way)."""
        trial = self.study.study.ask()
        candidate = suggest(trial, self.space)
        # One write makes the trial pending for other workers and names its owner, so a search
        # killed before the next write still leaves a trial fail_abandoned can attribute; and the
        # other workers see it as soon as possible after the choice (they avoid pending ones).
        trial.set_user_attr("candidate", candidate_attrs(candidate) | {"worker": worker()})
        if self.study.taken_since(self._chosen_from, trial.number, candidate):
            # Another worker took it between this choice and this trial; the later trial gives way.
            self.study.study.tell(trial, state=TrialState.FAIL)
            self.sampler.forget()
            self.announce(f"trial {trial.number}: {candidate.key} was taken by another worker; choosing again")
            return None
        trial.set_user_attr("worker", worker())
        trial.set_user_attr("key", candidate.key)
        trial.set_user_attr("structure", self.space.structure(candidate))
        batches = list(range(self.batches)) if selection.batches is None else list(selection.batches)
        started = time.perf_counter()
        try:
            timing, feasible, scores = self.evaluate(candidate, batches)
        except BaseException:
            self.study.study.tell(trial, state=TrialState.FAIL)
            raise
        quality = self.objective(self.reference.retention(scores)) if scores else None
        latency = self.value(timing)
        attrs = {
            "feasible": feasible,
            "latency": latency,
            "latency_ms": timing.milliseconds,
            "reference_ms": timing.reference_milliseconds,
            "scores": {str(k): v for k, v in scores.items()},
            "quality": quality,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if self.budget is not None:
            trial.set_constraint("latency", latency - self.budget.limit)
            values: list[float] = [quality if quality is not None else 0.0]
        else:
            values = [quality if quality is not None else 0.0, latency]
        self.study.study.tell(trial, values)
        if self.directory is not None:
            record = {
                "trial": trial.number,
                "key": candidate.key,
                **candidate_attrs(candidate),
                "structure": self.space.structure(candidate),
                **attrs,
                "retention": self.reference.retention(scores) if scores else None,
                "seconds": round(time.perf_counter() - started, 3),
                "worker": worker(),
            }
            append_line(self.directory / EVALUATIONS_FILE, record)
        what = f"quality {quality:.4f} on batches {sorted(scores)}" if scores else "over budget, quality not measured"
        self.announce(f"trial {trial.number}: {candidate.key}: latency {latency:.4g} {self._unit()}, {what}")
        return Trial(candidate, feasible, latency, scores)

    def _unit(self) -> str:
        return "ms" if self.budget is not None and not self.budget.relative else "× uncompressed"

    def outcome(self, selection: Selection) -> Outcome:
        """The state of the search, with the selector's last word."""
        history = self.study.history()
        timings = self.study.timings()
        reference = self.reference if any(trial.scores for trial in history) else self._reference
        return Outcome(selection, history, reference, timings, evaluations_spent(history), self.latency(timings))

    def run(self) -> Outcome:
        """Evaluate until the selector names no next candidate. Under a budget, the answer's shape
        is timed until it has CONFIRMING_RUNS timings, the selector asked again after each one."""
        while True:
            selection = self.sampler.peek(self.study.study)
            if selection.next is None:
                if self.budget is not None and selection.best is not None and self.confirm(selection.best):
                    self.sampler.forget()
                    continue
                return self.outcome(selection)
            self.step(selection)
