"""The search's record: an Optuna study, so that it resumes, spreads over workers and shows in
optuna-dashboard.

Every evaluation is one Optuna trial. Its parameters are the pruner (``pruner``) and, per dimension
the pruner offers, the position of its ratio on the axis (``ffn``, ``heads``, ``layers``: an
integer, so that TPE models the order); its user attributes hold the configuration in words, its
latency, and its score per quality task on each evaluation batch. A search with a latency budget
maximises the objective with the budget as the constraint ``latency − budget ≤ 0``
(``trial.set_constraint``); without one it has two objectives, quality up and latency down, and
its result is the Pareto front.

What all workers of a study share lives in the study's user attributes: the search settings (a
worker with other settings is refused), the uncompressed model's reference scores, and the
latency of every model shape timed so far.

Whatever selector runs the search, the study's sampler is a :class:`SelectorSampler`: an
Optuna sampler that asks the ``select_ratio`` plugin for each trial's configuration. The bandit
and TPE therefore write the same kind of study, to the same storage.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
import filelock
import sqlalchemy.engine
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from prunekit.errors import UsageError
from prunekit.payloads import Dimension
from prunekit.plugins.search.budget import Timing
from prunekit.plugins.search.payloads import Candidate, Selection, Trial

if TYPE_CHECKING:
    from prunekit.plugins.search.space import Space

log = logging.getLogger(__name__)

SETTINGS = "prunekit:settings"
REFERENCE = "prunekit:reference"
LATENCY = "prunekit:latency:"
PRUNER = "pruner"


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; a search reports its own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage(url: str) -> optuna.storages.RDBStorage:
    """``url`` as Optuna opens it; SQLite waits for a lock instead of failing at once, so that
    several processes on one machine can share the file (a database server: :func:`_server`).

    Opening a new file creates Optuna's tables, and two processes doing so at the same moment race
    (seen in CI under load: a unique constraint on ``alembic_version``, or "table alembic_version
    already exists"). A file lock beside the database lets one process create them while the
    others wait, then open the finished schema."""
    if not url.startswith("sqlite"):
        return _server(url)
    database = sqlalchemy.engine.make_url(url).database
    if not database or database == ":memory:":
        return _sqlite(url)
    with filelock.FileLock(f"{database}.lock"):
        return _sqlite(url)


def _server(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """A database server's storage. Workers on several machines starting at once race to create Optuna's tables in
    an empty database, as processes do on one SQLite file, and no file lock reaches across machines: the loser of the
    race finds them half made and fails, so it waits a moment and opens the finished schema."""
    for attempt in range(attempts - 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):  # the other side of the race
            time.sleep(1 + attempt)
    return optuna.storages.RDBStorage(url)


def _sqlite(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 300}})


def worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def changed_fields(old: dict, new: dict) -> list[str]:
    """Dotted names of the settings that differ (one level into ``run``)."""
    changed = []
    for key in sorted(old.keys() | new.keys()):
        if key == "run" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            changed += [f"run.{k}" for k in sorted(old[key].keys() | new[key].keys()) if old[key].get(k) != new[key].get(k)]
        elif old.get(key) != new.get(key):
            changed.append(key)
    return changed


# --- configurations as Optuna parameters ---------------------------------------------------------


def distributions(space: Space, pruner: str) -> dict[str, optuna.distributions.BaseDistribution]:
    """The parameters of a trial of ``pruner``: the pruner, then an axis position per dimension."""
    found: dict[str, optuna.distributions.BaseDistribution] = {PRUNER: CategoricalDistribution(list(space.pruners))}
    for dim in space.pruners[pruner]:
        found[dim.value] = IntDistribution(0, len(space.axes[dim].ratios) - 1)
    return found


def params(space: Space, candidate: Candidate) -> dict[str, Any]:
    values: dict[str, Any] = {PRUNER: candidate.plugin}
    for dim, ratio in candidate.ratios.items():
        values[dim.value] = space.axes[dim].index(ratio)
    return values


def suggest(trial: optuna.trial.BaseTrial, space: Space) -> Candidate:
    """The configuration of ``trial``, suggested parameter by parameter (a conditional space: the
    axes asked depend on the pruner)."""
    pruner = trial.suggest_categorical(PRUNER, list(space.pruners))
    ratios = {}
    for dim in space.pruners[pruner]:
        axis = space.axes[dim]
        ratios[dim] = axis.ratios[trial.suggest_int(dim.value, 0, len(axis.ratios) - 1)]
    return Candidate(pruner, ratios)


def candidate_from_attrs(attrs: dict[str, Any]) -> Candidate:
    return Candidate(attrs["plugin"], {Dimension(d): float(r) for d, r in attrs["ratios"].items()})


def candidate_attrs(candidate: Candidate) -> dict[str, Any]:
    return {"plugin": candidate.plugin, "ratios": {d.value: r for d, r in candidate.ratios.items()}}


def trial_payload(frozen: optuna.trial.FrozenTrial) -> Trial | None:
    """A finished trial of a search as the payload selectors read (``None`` for anything else)."""
    attrs = frozen.user_attrs
    if frozen.state != TrialState.COMPLETE or "candidate" not in attrs or "feasible" not in attrs:
        return None
    return Trial(
        candidate=candidate_from_attrs(attrs["candidate"]),
        feasible=attrs["feasible"],
        latency=attrs.get("latency"),
        scores={int(k): dict(v) for k, v in attrs.get("scores", {}).items()},
    )


@dataclass(frozen=True)
class Snapshot:
    """The study as one read saw it (:meth:`SearchStudy.snapshot`)."""

    history: list[Trial]
    pending: list[Candidate]  # what other workers are evaluating
    seen: frozenset[int]  # the trials that held a configuration when it was read


# --- the sampler -----------------------------------------------------------------------------------


class SelectorSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler whose every trial gets the configuration a ``select_ratio`` plugin chose.

    ``choose(study)`` builds the selector's request from the study's trials and returns its
    :class:`~prunekit.payloads.Selection`. :meth:`peek` chooses ahead of ``study.ask()`` so that a
    driver can stop without opening a trial; the choice is then used by the next trial. A trial's
    selection (which evaluation batches to measure, say) is available from :meth:`selection`.
    """

    def __init__(self, choose: Callable[[optuna.Study], Selection], space: Space) -> None:
        self._choose = choose
        self._space = space
        self._ahead: Selection | None = None
        self._selections: dict[int, Selection] = {}

    def peek(self, study: optuna.Study) -> Selection:
        if self._ahead is None:
            self._ahead = self._choose(study)
        return self._ahead

    def forget(self) -> None:
        """Drop a choice made ahead: the state it was made from has changed."""
        self._ahead = None

    def selection(self, number: int) -> Selection:
        return self._selections[number]

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        selection = self.peek(study)
        self._ahead = None
        if selection.next is None:
            raise RuntimeError("the selector ended the search; check peek() before asking for a trial")
        self._selections[trial.number] = selection

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        chosen = self._selections[trial.number].next
        return params(self._space, chosen)[param_name]

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 - Optuna's signature
        self._selections.pop(trial.number, None)


# --- the study -------------------------------------------------------------------------------------


class SearchStudy:
    """One search's Optuna study and the state its workers share.

    The search loop sets the study's sampler (a :class:`SelectorSampler`) once it knows the space."""

    def __init__(self, url: str | None, name: str, directions: list[str]) -> None:
        """Open (or create) study ``name`` in the storage at ``url``; ``None`` keeps it in memory."""
        self.url = url
        quiet_optuna()
        try:
            self.study = optuna.create_study(
                storage=None if url is None else storage(url), study_name=name, directions=directions,
                load_if_exists=True,
            )
        except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
            raise UsageError(f"cannot open the search storage {url!r}: {exc}") from exc
        if [d.name.lower() for d in self.study.directions] != directions:
            raise UsageError(f"study {name!r} in {url} was created for other objectives; choose another --study")

    def claim_settings(self, settings: dict[str, Any]) -> None:
        """Record the settings of the search, or refuse to join a study that has others."""
        current = self.study.user_attrs.get(SETTINGS)
        if current is None:
            self.study.set_user_attr(SETTINGS, settings)
            return
        changed = changed_fields(current, settings)
        if changed:
            raise UsageError(
                f"study {self.study.study_name!r} holds a search with other settings ({', '.join(changed)}); "
                f"repeat its settings, or start another one with --output or --study"
            )

    def reference(self) -> dict[int, dict[str, float]] | None:
        stored = self.study.user_attrs.get(REFERENCE)
        return None if stored is None else {int(k): v for k, v in stored.items()}

    def set_reference(self, batches: dict[int, dict[str, float]]) -> None:
        self.study.set_user_attr(REFERENCE, {str(k): v for k, v in batches.items()})

    def timings(self) -> dict[str, Timing]:
        """Every model shape timed so far, by :meth:`Space.structure`."""
        return {
            key.removeprefix(LATENCY): Timing(tuple(tuple(run) for run in value["runs"]))
            for key, value in self.study.user_attrs.items()
            if key.startswith(LATENCY)
        }

    def add_timing(self, structure: str, timing: Timing) -> Timing:
        """Record the runs of ``timing`` for ``structure``; all its runs so far."""
        known = self.timings().get(structure)
        combined = timing if known is None else known.add(timing)
        self.study.set_user_attr(LATENCY + structure, {"runs": [list(run) for run in combined.runs]})
        return combined

    def history(self) -> list[Trial]:
        return self.snapshot().history

    def snapshot(self) -> Snapshot:
        """The finished and the pending trials as one read of the storage sees them: what a
        selector chooses from, and what :meth:`taken_since` compares against afterwards."""
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        history = [payload for payload in map(trial_payload, trials) if payload is not None]
        holding = [t for t in trials if "candidate" in t.user_attrs]
        pending = [candidate_from_attrs(t.user_attrs["candidate"]) for t in holding if t.state == TrialState.RUNNING]
        return Snapshot(history, pending, frozenset(t.number for t in holding))

    def taken_since(self, snapshot: Snapshot, number: int, candidate: Candidate) -> bool:
        """Whether another worker took ``candidate`` after ``snapshot`` was read and before trial
        ``number`` was opened for it: a trial numbered below ``number``, running or finished, that
        the snapshot did not hold. Checking only running trials misses a worker so quick that it
        finished the candidate in that interval (seen on CI: two configurations measured twice)."""
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        return any(
            t.number < number and t.number not in snapshot.seen and "candidate" in t.user_attrs
            and candidate_from_attrs(t.user_attrs["candidate"]).key == candidate.key
            for t in trials
        )

    def fail_abandoned(self) -> list[int]:
        """Mark as failed the running trials of processes of this machine that no longer exist (a
        search killed mid-trial), so that they are not taken for another worker's."""
        host = socket.gethostname()
        failed = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = trial.user_attrs
            owner = attrs.get("worker") or attrs.get("candidate", {}).get("worker", "")
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                self.study.tell(trial.number, state=TrialState.FAIL)
                failed.append(trial.number)
        return failed
