"""The ``optuna`` selector (TPE, random, grid) and the Optuna side of the search: its study, the
budget as a constraint, the Pareto front, and selectors as Optuna samplers."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest

from prunekit.config import RunConfig
from prunekit.manager import get_plugins
from prunekit.payloads import Dimension
from prunekit.plugins.search.budget import LatencyBudget
from prunekit.plugins.search.driver import SearchLoop
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.payloads import Candidate, Selection
from prunekit.plugins.search.study import SearchStudy, SelectorSampler, candidate_attrs, suggest
from prunekit.plugins.search.table import TableEvaluator, replay

from test_bandit import synthetic_table

MEAN = Objective()


def full_evaluations(outcome) -> Counter:
    return Counter(trial.candidate.key for trial in outcome.history if trial.scores)


def test_grid_evaluates_every_feasible_configuration_once_and_finds_the_best():
    table = synthetic_table(3, batches=2)
    outcome = replay(table, get_plugins(), "optuna", objective=MEAN, budget=0.75, seed=3, options={"sampler": "grid"})
    space = table.space()
    feasible = {c.key for c in table.feasible(space, 0.75)}
    assert set(full_evaluations(outcome)) == feasible
    assert max(full_evaluations(outcome).values()) == 1
    assert all(len(trial.scores) == table.batches for trial in outcome.history if trial.scores)
    assert outcome.selection.best.key == table.best(MEAN, 0.75).key
    assert "every configuration evaluated" in outcome.selection.note


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_samplers_stop_at_the_evaluation_budget_and_never_repeat(sampler):
    table = synthetic_table(4, batches=2)
    outcome = replay(table, get_plugins(), "optuna", objective=MEAN, budget=0.75, seed=4,
                     max_evaluations=6, options={"sampler": sampler})
    assert outcome.evaluations == 6 * table.batches
    assert max(full_evaluations(outcome).values()) == 1
    best = outcome.selection.best
    assert best is not None and table.timing(table.space(), best).relative <= 0.75


def test_without_a_budget_the_search_is_a_pareto_search():
    table = synthetic_table(6, batches=2)
    outcome = replay(table, get_plugins(), "optuna", objective=MEAN, budget=None, seed=6, options={"sampler": "grid"})
    assert outcome.selection.best is None
    assert len(full_evaluations(outcome)) == len(table.space().candidates())
    assert all(trial.feasible for trial in outcome.history)


@pytest.mark.parametrize("budget", [0.75, None])
def test_the_budget_is_an_optuna_constraint_and_latency_a_second_objective(budget):
    table = synthetic_table(7, batches=2)
    plugins = get_plugins()
    config = plugins.resolve_options(RunConfig(model="synthetic", plugins=["optuna"], options={"optuna": {"sampler": "grid"}}))
    study = SearchStudy(None, "constraint", ["maximize"] if budget is not None else ["maximize", "minimize"])
    SearchLoop(
        config=config, evaluator=TableEvaluator(table), hooks=plugins.hooks(["optuna"]), study=study,
        budget=None if budget is None else LatencyBudget(fraction=budget), objective=MEAN,
        batches=table.batches, max_evaluations=5,
    ).run()
    trials = study.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trials
    if budget is None:
        assert all(len(t.values) == 2 and t.values[1] == t.user_attrs["latency"] for t in trials)
        assert study.study.best_trials  # Optuna's own Pareto front
    else:
        for trial in trials:
            assert trial.constraints == {"latency": pytest.approx(trial.user_attrs["latency"] - budget)}
        assert study.study.best_trial.user_attrs["feasible"]


def test_any_selector_drives_a_plain_optuna_study_as_its_sampler():
    """SelectorSampler is an ordinary Optuna sampler: study.optimize follows the selector's choices."""
    space = synthetic_table().space()
    wanted = [c for c in space.candidates() if c.plugin == "wide"][:3]
    chosen = iter(wanted)
    sampler = SelectorSampler(lambda study: Selection(next=next(chosen)), space)
    study = optuna.create_study(sampler=sampler)
    keys = []

    def objective(trial):
        keys.append(suggest(trial, space).key)
        return 0.0

    study.optimize(objective, n_trials=3)
    assert keys == [c.key for c in wanted]
    assert wanted[0].key == "wide ffn=0.1 heads=0"
    assert study.trials[0].params == {"pruner": "wide", "ffn": 0, "heads": 0}  # axis positions


def test_of_two_workers_choosing_the_same_configuration_at_once_the_later_trial_gives_way():
    study = SearchStudy(None, "race", ["maximize"])
    chosen, other = Candidate("random", {Dimension.FFN: 0.5}), Candidate("random", {Dimension.FFN: 0.3})
    snapshot = study.snapshot()  # both workers choose from an empty study
    first, second, third = (study.study.ask() for _ in range(3))
    for trial, candidate in ((first, chosen), (second, chosen), (third, other)):
        trial.set_user_attr("candidate", candidate_attrs(candidate))
    assert study.taken_since(snapshot, second.number, chosen)
    assert not study.taken_since(snapshot, first.number, chosen)
    assert not study.taken_since(snapshot, third.number, other)


def test_a_worker_that_finished_the_configuration_since_the_choice_also_counts_as_taking_it():
    """The race CI lost: the other worker chose, evaluated and finished the candidate between this
    worker's choice and its trial, so no running trial holds it any more."""
    study = SearchStudy(None, "race", ["maximize"])
    chosen = Candidate("random", {Dimension.FFN: 0.5})
    snapshot = study.snapshot()
    quick = study.study.ask()
    quick.set_user_attr("candidate", candidate_attrs(chosen))
    study.study.tell(quick, [1.0])
    late = study.study.ask()
    assert study.taken_since(snapshot, late.number, chosen)
    assert not study.taken_since(study.snapshot(), late.number, chosen)  # chosen knowing it: a repeat pull


def test_a_new_sqlite_storage_waits_while_another_process_creates_its_tables(tmp_path):
    """Two workers opening a new SQLite file at once both create Optuna's tables and one fails
    (CI saw both a unique-constraint error and "table alembic_version already exists"); the lock
    beside the file makes the second wait for the first."""
    import threading

    import filelock

    from prunekit.plugins.search import study

    database = tmp_path / "shared.db"
    url = f"sqlite:///{database}"
    opened = []
    with filelock.FileLock(f"{database}.lock"):  # another process is creating the tables
        waiting = threading.Thread(target=lambda: opened.append(study.storage(url)))
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not opened
    waiting.join(timeout=60)
    assert isinstance(opened[0], optuna.storages.RDBStorage)

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    start, errors = threading.Barrier(4), []

    def open_at_once():
        start.wait()
        try:
            study.storage(fresh)
        except Exception as error:  # noqa: BLE001 - the assertion below names it
            errors.append(error)

    workers = [threading.Thread(target=open_at_once) for _ in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert errors == []


class RacingStorage:
    """Optuna's storage on a server where another worker is creating the tables: the first ``losses`` opens fail as
    the loser of that race does (a unique violation), the next one succeeds."""

    def __init__(self, losses: int, error: type[Exception]) -> None:
        self.losses, self.error, self.opened = losses, error, 0

    def __call__(self, url: str) -> str:
        self.opened += 1
        if self.opened <= self.losses:
            raise self.error("INSERT INTO alembic_version", {}, Exception("duplicate key value"))
        return f"storage of {url}"


def test_a_worker_that_loses_the_race_to_create_the_tables_opens_them_after(monkeypatch):
    import sqlalchemy.exc

    from prunekit.plugins.search import study

    racing = RacingStorage(2, sqlalchemy.exc.IntegrityError)
    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(study.time, "sleep", lambda seconds: None)
    assert study.storage("postgresql://worker@db/prunekit") == "storage of postgresql://worker@db/prunekit"
    assert racing.opened == 3


def test_a_server_that_refuses_the_connection_is_not_retried(monkeypatch):
    import sqlalchemy.exc

    from prunekit.plugins.search import study

    refusing = RacingStorage(5, sqlalchemy.exc.OperationalError)
    monkeypatch.setattr(optuna.storages, "RDBStorage", refusing)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        study.storage("postgresql://worker@nowhere/prunekit")
    assert refusing.opened == 1
