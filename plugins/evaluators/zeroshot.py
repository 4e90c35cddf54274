"""``zeroshot``: lm-eval tasks scored on the in-memory model, with lm-eval's own code unchanged.

The model is wrapped in lm-eval's ``HFLM`` as it is (no save and reload) and scored by
``lm_eval.simple_evaluate``, so the numbers are exactly those of a plain lm-eval call with the
same model, tasks and limit. Tasks are lm-eval task names, or ``local:DIR`` for a folder of task
configs: ``local:DIR`` alone runs every task defined there; given together with task names, the
folder is only searched for those names (a group such as ``zeroshot_local`` included).

lm-eval resolves a config's relative ``data_files`` against the working directory, which makes a
folder of configs work from one place only. Each config in DIR is therefore stood in for by a
generated one that ``include:``-s the original (so its ``!function`` helpers still resolve next
to it) and overrides only ``dataset_kwargs.data_files``, made absolute against the config's own
folder. The configs themselves need no change.

Each task is scored by its ``primary_metric``: ``acc_norm`` where lm-eval reports it, else
``acc`` -- the convention of the pruning papers (acc_norm for PIQA, HellaSwag and ARC, acc for
WinoGrande). The evaluator measures only when the run gives tasks (``--tasks`` or ``tasks:``).

Beside lm-eval's standard errors it records each multiple-choice task's chance level, the accuracy of
guessing over the examples actually scored, and the standard error of the average: the report's
above-chance retention needs both (:mod:`prunekit.chance`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import random
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from prunekit import hookimpl, hub
from prunekit.chance import average_stderr
from prunekit.errors import UsageError
from prunekit.payloads import EvalRequest, Metrics
from prunekit.progress import bars_hidden

if TYPE_CHECKING:
    from lm_eval.api.task import Task
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

NAME = "zeroshot"
LOCAL = "local:"
PRIMARY_ORDER = ("acc_norm", "acc")


class ZeroShotOptions(BaseModel):
    """Settings of ``zeroshot`` under ``options: {zeroshot: {...}}``; tasks and limit are run fields."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=8, gt=0, description="Requests per forward pass in lm-eval.")
    sample: int | None = Field(
        default=None,
        gt=0,
        description="Examples per task drawn at random, seeded by the run's seed, instead of the first "
        "--limit: a cheap, noisy estimate (a search's evaluation batches).",
    )


@dataclass
class TaskScores:
    """lm-eval's results for a set of tasks, in prunekit's terms."""

    tasks: dict[str, dict[str, float]]
    """``{task: {metric: value}}`` (the filter is left out of the metric name where it is ``none``)."""
    primary_metric: dict[str, str]
    stderr: dict[str, dict[str, float]]
    versions: dict[str, Any]
    """Each task's config version, as lm-eval reports it."""
    examples: dict[str, int]
    """Examples scored per task (after ``limit`` or ``sample``)."""
    shots: dict[str, int]
    """Few-shot examples per prompt (0 unless a task's config asks for more)."""
    lm_eval_version: str
    groups: dict[str, list[str]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    """Per multiple-choice task, the accuracy of guessing: the mean over the scored examples of 1 / choices."""

    @property
    def average(self) -> float:
        """Mean of each task's primary metric: the papers' zero-shot average."""
        return statistics.fmean(self.tasks[t][m] for t, m in self.primary_metric.items())

    @property
    def average_stderr(self) -> float | None:
        """The standard error of :attr:`average`, the tasks scored independently; ``None`` where a task has none."""
        errors = [self.stderr.get(t, {}).get(m) for t, m in self.primary_metric.items()]
        return None if not errors or None in errors else average_stderr(errors)


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*.yaml"))
    )


def _absolute(files: Any, folder: Path) -> Any:
    """``data_files`` (a path, a list, or a split -> path(s) mapping) with relative local paths made absolute."""
    if isinstance(files, dict):
        return {split: _absolute(value, folder) for split, value in files.items()}
    if isinstance(files, list):
        return [_absolute(value, folder) for value in files]
    if isinstance(files, str) and "://" not in files and not Path(files).is_absolute():
        return str(folder / files)
    return files


@functools.cache
def _stand_ins(folder: Path, signature: tuple) -> Path:
    """A folder of configs that include each config under ``folder`` with absolute ``data_files``.

    Cached per process and folder state; removed when the process exits."""
    from lm_eval.tasks._yaml_loader import load_yaml

    target = Path(tempfile.mkdtemp(prefix="prunekit-tasks-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    for config in sorted(folder.rglob("*.yaml")):
        try:
            raw = load_yaml(config, resolve_func=False)
        except Exception:  # not an lm-eval config; lm-eval's own indexer skips it the same way
            continue
        stand_in: dict[str, Any] = {"include": str(config)}
        dataset_kwargs = raw.get("dataset_kwargs")
        if isinstance(dataset_kwargs, dict) and "data_files" in dataset_kwargs:
            stand_in["dataset_kwargs"] = {
                **dataset_kwargs,
                "data_files": _absolute(dataset_kwargs["data_files"], config.parent),
            }
        path = target / config.relative_to(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(stand_in, sort_keys=False))
    return target


@functools.cache
def _manager(include: tuple[Path, ...], defaults: bool) -> TaskManager:
    """lm-eval's task index; with ``defaults`` it also scans lm-eval's thousands of built-in
    configs (tens of seconds), so it is built once per process and only when a name needs it."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in include] or None, include_defaults=defaults)


def resolve_tasks(entries: list[str]) -> tuple[TaskManager, list[str]]:
    """The task index and the task names that ``entries`` (names and ``local:DIR``) stand for."""
    if not entries:
        raise UsageError("no zero-shot tasks given")
    folders = [Path(entry.removeprefix(LOCAL)).expanduser().resolve() for entry in entries if entry.startswith(LOCAL)]
    names = [entry for entry in entries if not entry.startswith(LOCAL)]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"task folder not found: {folder}")
    include = tuple(_stand_ins(folder, _signature(folder)) for folder in folders)
    manager = _manager(include, False) if include else None
    local = set() if manager is None else set(manager.all_tasks)
    if manager is not None and not manager.all_subtasks:
        raise UsageError(f"no lm-eval task configs found in {', '.join(map(str, folders))}")
    if not names:
        return manager, list(manager.all_subtasks)
    if manager is None or not set(names) <= set(manager.all_tasks):
        manager = _manager(include, True)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        where = f" (nor in {', '.join(map(str, folders))})" if folders else ""
        raise UsageError(f"unknown lm-eval task {unknown[0]!r}{where}")
    builtin = [name for name in names if name not in local]
    if builtin:  # lm-eval's own task configs read their data from the Hub
        hub.reach(f"the data of lm-eval tasks {', '.join(builtin)}")
    return manager, names


def _quiet_when_bars_hidden(lm: Any) -> Any:
    """``lm`` with its request bars off where prunekit hides its own bars: ``simple_evaluate``
    cannot pass ``disable_tqdm`` on, and tqdm reads its environment only when imported."""
    if bars_hidden():
        for request_type in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
            setattr(lm, request_type, functools.partial(getattr(lm, request_type), disable_tqdm=True))
    return lm


def _no_git_hash() -> None:
    """Stands in for lm-eval's ``get_git_commit_hash`` during ``simple_evaluate``.

    lm-eval records ``git describe --always`` of the working directory as ``results["git_hash"]``,
    meant for a checkout of lm-eval itself; prunekit does not read it, and outside a git repository
    git's "fatal: not a git repository" would land on the user's stderr."""
    return None


def _metric_name(key: str) -> str:
    metric, _, filter_name = key.partition(",")
    return metric if filter_name == "none" else key


def _primary(metrics: dict[str, float]) -> str:
    return next((name for name in PRIMARY_ORDER if name in metrics), next(iter(metrics)))


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Python's, numpy's and torch's global random states as they were, whatever the block seeds."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def chance_level(task: Task, *, limit: int | None = None, indices: list[int] | None = None) -> float | None:
    """The accuracy of guessing on the examples lm-eval scores of a multiple-choice ``task`` (its first ``limit``, or
    the drawn ``indices``; lm-eval's own iterator picks them): the mean of 1 / number of choices. Tasks mix choice
    counts (ARC has 3 to 5), so no single 1/k fits; ``None`` for a task that is not multiple choice."""
    if task.OUTPUT_TYPE != "multiple_choice":
        return None
    levels = [1 / len(task.doc_to_choice(doc)) for _, doc in task.doc_iterator(limit=limit, samples=indices)]
    return statistics.fmean(levels) if levels else None


def score_tasks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[str],
    *,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> TaskScores:
    """Score ``model`` on ``tasks`` (names and ``local:DIR``) with lm-eval.

    ``limit`` scores the first N examples of each task, as lm-eval's ``--limit`` does; ``sample``
    scores N examples per task drawn at random with ``seed`` instead: a cheap, noisy estimate
    for a search that compares many candidates. The global random states lm-eval seeds are
    restored afterwards, so scoring never changes what a later random step does."""
    from unittest import mock

    import lm_eval
    import lm_eval.evaluator
    from lm_eval.models.huggingface import HFLM

    if limit is not None and sample is not None:
        raise UsageError("give either limit or sample for zero-shot tasks, not both")
    manager, names = resolve_tasks(tasks)
    with _random_state_kept():
        try:
            loaded = manager.load(names)
        except Exception as exc:  # a config that lm-eval cannot build, or data it cannot find
            reason = " ".join(str(exc).split())[:300]
            raise UsageError(f"cannot load lm-eval tasks {', '.join(names)}: {type(exc).__name__}: {reason}") from exc
        leaves = loaded["tasks"]
        samples = None
        if sample is not None:
            chooser = random.Random(seed)
            samples = {
                name: sorted(chooser.sample(range(len(task.eval_docs)), min(sample, len(task.eval_docs))))
                for name, task in leaves.items()
            }
        with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", _no_git_hash):
            results = lm_eval.simple_evaluate(
                model=_quiet_when_bars_hidden(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)),
                tasks=list(leaves.values()),
                limit=limit,
                samples=samples,
                task_manager=manager,
                log_samples=False,
            )

    scores: dict[str, dict[str, float]] = {}
    stderr: dict[str, dict[str, float]] = {}
    for task, values in results["results"].items():
        scores[task], stderr[task] = {}, {}
        for key, value in values.items():
            if "," not in key or not isinstance(value, (int, float)):
                continue  # name, alias, sample counts; "N/A" standard errors
            name = _metric_name(key)
            if name.partition(",")[0].endswith("_stderr"):
                stderr[task][name.replace("_stderr", "", 1)] = float(value)
            else:
                scores[task][name] = float(value)
    chance = {name: chance_level(task, limit=limit, indices=(samples or {}).get(name)) for name, task in leaves.items()}
    return TaskScores(
        tasks=scores,
        primary_metric={task: _primary(metrics) for task, metrics in scores.items() if metrics},
        stderr=stderr,
        versions={task: results["versions"].get(task) for task in scores},
        examples={task: counts["effective"] for task, counts in results.get("n-samples", {}).items()},
        shots={task: results.get("n-shot", {}).get(task) for task in scores},
        lm_eval_version=lm_eval.__version__,
        groups=dict(loaded.get("group_map", {})),
        chance={name: level for name, level in chance.items() if level is not None},
    )


@hookimpl
def plugin_options() -> type[BaseModel]:
    return ZeroShotOptions


@hookimpl
def evaluate(request: EvalRequest) -> Metrics | None:
    if not request.config.tasks or request.stage == "recovery":  # too slow to repeat at every recovery step
        return None
    options = ZeroShotOptions.model_validate(request.options(NAME))
    if request.tokenizer is None:
        raise UsageError(f"zero-shot tasks need a tokenizer, and model {request.config.model!r} has none")
    scores = score_tasks(
        request.model,
        request.tokenizer,
        request.config.tasks,
        limit=request.config.limit,
        sample=options.sample,
        seed=request.config.seed,
        batch_size=options.batch_size,
    )
    details = {
        "lm_eval_version": scores.lm_eval_version,
        "task_versions": scores.versions,
        "examples": scores.examples,
        "stderr": scores.stderr,
        "chance": scores.chance,
        "average_stderr": scores.average_stderr,
        "groups": scores.groups,
        "shots": scores.shots,
        "limit": request.config.limit,
        "batch_size": options.batch_size,
    }
    if options.sample is not None:
        details.update(sample=options.sample, sample_seed=request.config.seed)
    return Metrics(tasks=scores.tasks, primary_metric=scores.primary_metric, details={NAME: details})
