"""One ``core search``: which plugins play which part, where it is recorded, and what it leaves.

``--plugins`` names the pruners to choose among (plugins implementing ``score_importance``), and
optionally the selector (a plugin implementing ``select_ratio``) and anything else a run should
use (a recovery plugin such as ``lora``, evaluators). With no selector named, every installed one
is asked, in pluggy's order: the ``bandit`` answers under a latency budget, ``optuna`` otherwise.
Recovery is not applied to candidates during the search (it would multiply its cost); the chosen
configuration's final run applies it.

The search directory (``--output``, default ``runs/search-<model>-<pruners>-<budget>``, the same
for the same command so that rerunning it resumes) holds the Optuna study (``study.db``, unless
``--storage`` names another), ``evaluations.jsonl`` (every evaluation), ``batches.jsonl`` (every
batch scored), ``search.json``, ``report.md`` and ``frontier.png``, and ``best/``: the chosen
configuration run through the ordinary pipeline, a stock checkpoint with its full run report.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from prunekit.errors import UsageError
from prunekit.files import write_text
from prunekit.payloads import Dimension
from prunekit.plugins.search import report
from prunekit.plugins.search.budget import LatencyBudget, LatencyKind
from prunekit.plugins.search.driver import Outcome, SearchLoop
from prunekit.plugins.search.evaluation import ModelEvaluator, QualitySettings
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.payloads import Selection
from prunekit.plugins.search.study import SearchStudy, changed_fields

if TYPE_CHECKING:
    from prunekit.config import RunConfig
    from prunekit.manager import Plugins

STUDY_FILE = "study.db"
SETTINGS_FILE = "settings.json"
BEST_DIR = "best"


@dataclass
class SearchArguments:
    """Everything ``core search`` was given."""

    config: RunConfig
    budget: LatencyBudget | None
    kind: LatencyKind
    objective: Objective
    grids: dict[Dimension | None, list[float]]
    quality: QualitySettings
    max_evaluations: float | None = None
    output: Path | None = None
    storage: str | None = None
    study: str | None = None


class SearchSettings(BaseModel):
    """What makes two searches one: a resumed search, or another worker, must repeat it."""

    run: dict
    budget: LatencyBudget | None
    kind: LatencyKind
    objective: Objective
    ratios: dict[str, list[float]]
    quality: QualitySettings


def default_directory(arguments: SearchArguments, pruners: list[str]) -> Path:
    model = arguments.config.model.strip("/").replace("/", "_")
    if arguments.budget is None:
        budget = "pareto"
    else:
        budget = f"{arguments.kind}{arguments.budget.limit:g}{'' if arguments.budget.relative else 'ms'}"
    return Path("runs") / f"search-{model}-{'+'.join(pruners)}-{budget}"


def _claim_directory(directory: Path, settings: SearchSettings) -> None:
    """One directory holds one search: its measurements are only valid for its settings."""
    file = directory / SETTINGS_FILE
    current = settings.model_dump(mode="json")
    if file.is_file():
        changed = changed_fields(json.loads(file.read_text()), current)
        if changed:
            raise UsageError(
                f"{directory} holds a search with other settings ({', '.join(changed)}); "
                f"choose another --output or repeat the original settings"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_text(file, json.dumps(current, indent=2) + "\n")


def _digest(settings: SearchSettings) -> str:
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:10]


def _infeasible(budget: LatencyBudget, outcome: Outcome) -> str:
    """The one-line verdict of a search that found nothing within the budget, naming the fastest
    configuration it timed."""
    if not outcome.latency:
        return f"no configuration meets the latency budget ({budget.describe()})"
    fastest = min(outcome.latency, key=outcome.latency.get)
    unit = "ms" if not budget.relative else "× uncompressed"
    return (
        f"no configuration meets the latency budget ({budget.describe()}): the fastest found is {fastest} "
        f"at {outcome.latency[fastest]:.3g} {unit}; allow more latency, or search larger ratios or more "
        f"dimensions (--ratios, a pruner's dimensions option)"
    )


def _summarise(
    arguments: SearchArguments,
    loop: SearchLoop,
    outcome: Outcome,
    selectors: list[str],
    directory: Path,
    storage: str,
    study: str,
) -> report.Summary:
    budget = arguments.budget
    rows = report.evaluated(outcome, loop.space, arguments.objective, None if budget is None else budget.limit)
    references = [timing.reference_milliseconds for timing in outcome.timings.values()]
    return report.Summary(
        model=loop.config.model,
        pruners=list(loop.space.pruners),
        selectors=selectors,
        objective=arguments.objective.describe(),
        budget=None if budget is None else budget.describe(),
        latency_unit="ms" if budget is not None and not budget.relative else "× uncompressed",
        budget_limit=None if budget is None else budget.limit,
        tasks=[] if outcome.reference is None else outcome.reference.tasks,
        batches=loop.batches,
        reference={} if outcome.reference is None else outcome.reference.full(),
        reference_milliseconds=statistics.median(references) if references else None,
        best=report.best_row(rows, outcome.selection.best),
        note=outcome.selection.note,
        evaluated=rows,
        pareto=report.pareto(rows),
        candidates=len(loop.candidates),
        evaluations=outcome.evaluations / loop.batches,
        evaluation_batches=outcome.evaluations,
        timings=len(outcome.timings),
        directory=str(directory),
        storage=storage,
        study=study,
    )


def run_search(
    arguments: SearchArguments, plugins: Plugins, announce: Callable[[str], None] = lambda message: None
) -> report.Summary:
    """Search, write the search directory, run the chosen configuration; the summary.

    Raises :class:`UsageError` (after writing the report) when no configuration meets the budget."""
    from prunekit import pipeline

    config = arguments.config
    plugins.hooks(config.plugins)  # unknown or broken plugin names are bad input
    slicers = [name for name in config.plugins if name in plugins.implementers("slice_model")]
    if slicers:
        raise UsageError(
            f"{', '.join(slicers)} slices the whole model at one ratio at a time; a search needs pruners that "
            f"score units once (score_importance)"
        )
    pruners = [name for name in config.plugins if name in plugins.implementers("score_importance")]
    if not pruners:
        raise UsageError(f"a search needs a pruner among --plugins; {', '.join(config.plugins) or 'none'} scores nothing")
    installed = plugins.implementers("select_ratio")
    named = [name for name in config.plugins if name in installed]
    selectors = named or sorted(installed)
    if not selectors:
        raise UsageError("no select_ratio plugin is installed")
    run_plugins = [name for name in config.plugins if name not in named]
    evaluators = plugins.hooks(run_plugins).evaluators()
    resolved = plugins.resolve_options(
        pipeline.with_evaluator_options(config.model_copy(update={"plugins": run_plugins + selectors}), evaluators)
    )
    config = resolved.model_copy(update={"plugins": run_plugins})

    settings = SearchSettings(
        run=config.model_dump(mode="json", exclude={"output"}),
        budget=arguments.budget,
        kind=arguments.kind,
        objective=arguments.objective,
        ratios={("all" if d is None else d.value): grid for d, grid in arguments.grids.items()},
        quality=arguments.quality,
    )
    directory = arguments.output or default_directory(arguments, pruners)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"search output is not a directory: {directory}")
    _claim_directory(directory, settings)
    url = arguments.storage or f"sqlite:///{(directory / STUDY_FILE).resolve()}"
    name = arguments.study or f"search-{config.model.strip('/').replace('/', '_')}-{_digest(settings)}"
    directions = ["maximize"] if arguments.budget is not None else ["maximize", "minimize"]
    study = SearchStudy(url, name, directions)
    study.claim_settings(settings.model_dump(mode="json"))

    announce(f"loading {config.model}; {', '.join(pruners)} score it")
    evaluator = ModelEvaluator(
        config, plugins, pruners, evaluators, arguments.grids, arguments.quality, arguments.kind
    )
    loop = SearchLoop(
        config=config,
        evaluator=evaluator,
        hooks=plugins.hooks(selectors),
        study=study,
        budget=arguments.budget,
        objective=arguments.objective,
        batches=arguments.quality.batches,
        max_evaluations=arguments.max_evaluations,
        directory=directory,
        announce=announce,
    )
    offered = ", ".join(f"{p} ({'+'.join(d.value for d in dims)})" for p, dims in evaluator.space.pruners.items())
    announce(f"{len(loop.candidates)} configurations of {offered}; selector {', '.join(selectors)}")
    if arguments.budget is not None:
        fastest = loop.time_fastest()
        if not any(loop.feasible(timing) for _, timing in fastest):
            outcome = loop.outcome(Selection(next=None, note="even the most compressed shapes miss the budget"))
            report.write(_summarise(arguments, loop, outcome, selectors, directory, url, name), directory)
            raise UsageError(_infeasible(arguments.budget, outcome))
    outcome = loop.run()
    summary = _summarise(arguments, loop, outcome, selectors, directory, url, name)
    report.write(summary, directory)
    best = outcome.selection.best
    if best is None and arguments.budget is not None:
        raise UsageError(_infeasible(arguments.budget, outcome))
    if best is not None:
        run_config = evaluator.run_config(best).model_copy(update={"output": directory / BEST_DIR})
        del loop, evaluator  # the final run loads the model afresh
        summary.run = str(_final_run(run_config, plugins, best.key, announce))
        report.write(summary, directory)
    return summary


def _final_run(config: RunConfig, plugins: Plugins, key: str, announce: Callable[[str], None]) -> Path:
    """The chosen configuration through the ordinary pipeline, unless a previous attempt (a
    resumed search, or another worker in the same directory, which waits for it) finished it.
    The run directory records its command (:mod:`prunekit.rundir`): a run of the same choice
    that was cut off resumes there; another choice's run is replaced."""
    from prunekit import pipeline, rundir

    directory = config.output
    with (directory.parent / f".{directory.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers sharing the directory run it once
        try:
            rundir.choose(pipeline.resolve(config, plugins)[0])
        except UsageError:
            shutil.rmtree(directory)
        if (directory / rundir.REPORT_FILE).is_file():
            announce(f"the run of {key} finished earlier: {directory}")
            return directory
        announce(f"running {key} through the pipeline into {directory}")
        pipeline.run(config, plugins)
    return directory
