"""Searches sharing one study on a real PostgreSQL server, as workers on several machines do (docs/search.md).

The test starts Debian's PostgreSQL server into a temporary data directory on a free local port and stops it after
(``make setup`` installs the ``postgresql`` package where it can, and psycopg, SQLAlchemy's PostgreSQL driver, with prunekit's ``dev`` extra). Each
worker is a real ``core search`` process with an output directory of its own, as on its own machine. Checked:

- two workers cover the grid between them, with no configuration evaluated twice beyond the one race
  docs/search.md allows;
- a worker killed with SIGKILL loses no finished trial, and the survivor completes the grid;
- replaying a recorded table, two workers give the answer one worker gives alone, which is the grid's own.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from test_search_resume import command, environment

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

TABLE = PROJECT_ROOT / "bench" / "data" / "search_table_smollm2.json"


def server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return installed[-1].parent if installed else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> str:
    """A database URL on a PostgreSQL server of this test's own, stopped and deleted after the module."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's server is not installed (Debian: apt-get install postgresql; make setup does)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgresql]')")
    data = Path(tempfile.mkdtemp(prefix="prunekit-postgres-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root; Debian's package creates its own user
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_server_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def server_command(*argv: object) -> None:
        subprocess.run([*as_server_user, *map(str, argv)], check=True, capture_output=True, timeout=120)

    server_command(binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    server_command(binaries / "pg_ctl", "-D", data, "-l", data / "server.log", "-w", "-o",
                   f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    try:
        server_command(binaries / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "prunekit")
        yield f"postgresql://postgres@127.0.0.1:{port}/prunekit"
    finally:
        server_command(binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


def study_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def worker(out: Path, storage: str, study: str) -> subprocess.Popen[str]:
    return subprocess.Popen(command(out, "--storage", storage, "--study", study, "--json"), env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(storage: str, study: str) -> dict[int, tuple[str, tuple[float, ...], str]]:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    return {t.number: (t.user_attrs["key"], tuple(t.values), t.user_attrs["worker"]) for t in trials}


def test_two_workers_share_one_study_on_the_server(server, tmp_path):
    study = study_name()
    workers = [worker(tmp_path / f"machine-{index}", server, study) for index in range(2)]
    results = [process.communicate(timeout=900) for process in workers]
    for process, (_, stderr) in zip(workers, results):
        assert process.returncode == 0, stderr
    trials = finished(server, study)
    assert {w for _, _, w in trials.values()} <= {f"{os.uname().nodename}:{p.pid}" for p in workers}
    keys = Counter(key for key, _, _ in trials.values())
    assert len(keys) == 8  # the grid is covered between them
    assert sum(keys.values()) - len(keys) <= 1  # at most one configuration taken by both in a race
    assert len({json.loads(stdout)["best"]["key"] for stdout, _ in results}) == 1


def test_a_worker_killed_with_sigkill_loses_no_finished_trial(server, tmp_path):
    study = study_name()
    victim, survivor = (worker(tmp_path / f"machine-{index}", server, study) for index in range(2))
    deadline = time.time() + 600
    while time.time() < deadline and victim.poll() is None:
        if any(w.endswith(f":{victim.pid}") for _, _, w in _safe_finished(server, study).values()):
            break
        time.sleep(0.5)
    assert victim.poll() is None, victim.communicate()[1]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    before = finished(server, study)
    assert any(w.endswith(f":{victim.pid}") for _, _, w in before.values())

    _, stderr = survivor.communicate(timeout=900)  # it leaves alone the trial the victim was running
    assert survivor.returncode == 0, stderr
    rerun = worker(tmp_path / "machine-0", server, study)  # the victim's machine: it fails the cut-off trial
    stdout, stderr = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, stderr
    after = finished(server, study)
    for number, trial in before.items():  # no finished trial lost, none changed
        assert after[number] == trial
    keys = Counter(key for key, _, _ in after.values())
    assert len(keys) == 8  # the grid is complete, the victim's interrupted configuration included
    assert sum(keys.values()) - len(keys) <= 1
    assert json.loads(stdout)["best"]["key"] in keys


def _safe_finished(storage: str, study: str) -> dict[int, tuple[str, tuple[float, ...], str]]:
    """The finished trials, or none before the first worker has created the study."""
    try:
        return finished(storage, study)
    except KeyError:  # optuna: no such study yet
        return {}


REPLAY = """
import json, sys
from prunekit.manager import get_plugins
from prunekit.plugins.search.objective import Objective
from prunekit.plugins.search.table import Table, replay
table = Table.model_validate_json(open(sys.argv[1]).read())
outcome = replay(table, get_plugins(), "optuna", objective=Objective(), budget=0.8, options={"sampler": "grid"},
                 storage=sys.argv[2] or None, study=sys.argv[3])
print(json.dumps({"best": outcome.selection.best.key, "evaluated": sorted(t.candidate.key for t in outcome.history)}))
"""


def test_two_workers_replaying_a_recorded_table_give_the_answer_of_one(server):
    from prunekit.plugins.search.objective import Objective
    from prunekit.plugins.search.table import Table

    study = study_name()

    def replaying(storage: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", REPLAY, str(TABLE), storage, study], env=environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    alone = replaying("")  # in memory: one worker
    pair = [replaying(server) for _ in range(2)]
    answers = []
    for process in [alone, *pair]:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        answers.append(json.loads(stdout))
    table = Table.model_validate_json(TABLE.read_text())
    grid = table.best(Objective(), 0.8)
    assert {answer["best"] for answer in answers} == {grid.key}
    keys = Counter(key for key, _, _ in finished(server, study).values())
    # between them the pair measured the quality of what one worker does: every configuration within the budget
    # (which over-budget ones get a trial of their own, only to be timed, depends on whose timing of a shape the
    # study held first)
    feasible = {c.key for c in table.feasible(table.space(), 0.8)}
    assert set(keys) & feasible == set(answers[0]["evaluated"]) & feasible == feasible
    assert sum(keys.values()) - len(keys) <= 1
