"""A search killed with SIGKILL resumes with no finished trial lost; two processes share a study.

Real processes running ``core search`` on a tiny model, so both take a minute or two: marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.slow

CORE = Path(sys.executable).parent / "core"
QUICK = [
    "--batches", "2", "--windows", "1", "--window-length", "64",
    "-o", "latency.repeats=2", "-o", "latency.warmup=0", "-o", "latency.prompt_tokens=16", "-o", "latency.new_tokens=4",
    "-o", "perplexity.windows=1", "-o", "perplexity.length=64",
]


def command(out: Path, *extra: str) -> list[str]:
    """A grid search over 8 configurations, one full evaluation each."""
    return [str(CORE), "search", "--model", "tiny-llama", "--plugins", "random,magnitude,optuna",
            "-o", "optuna.sampler=grid", "--latency-budget", "10s", "--ratios", "0.2:0.8:0.2",
            "--output", str(out), *QUICK, *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PRUNEKIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def completed(storage: str) -> dict[int, tuple[str, tuple[float, ...], dict]]:
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 1
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    return {
        t.number: (t.user_attrs["key"], tuple(t.values), t.user_attrs["scores"])
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    }


def test_a_killed_search_resumes_with_every_finished_trial(tmp_path):
    out = tmp_path / "search"
    process = subprocess.Popen(command(out), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / "evaluations.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if records.is_file() and len(records.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    storage = f"sqlite:///{out / 'study.db'}"
    before = completed(storage)
    assert len(before) >= 3
    batches_before = (out / "batches.jsonl").read_text().splitlines()

    resumed = subprocess.run(command(out, "--json"), env=environment(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    after = completed(storage)
    for number, trial in before.items():  # no finished trial lost, none changed
        assert after[number] == trial
    keys = Counter(key for key, _, _ in after.values())
    assert len(keys) == 8 and set(keys.values()) == {1}  # every configuration once, none evaluated again
    batches = [json.loads(line) for line in (out / "batches.jsonl").read_text().splitlines()]
    assert (out / "batches.jsonl").read_text().splitlines()[: len(batches_before)] == batches_before
    assert max(Counter((b["key"], b["batch"]) for b in batches).values()) == 1  # no batch measured twice
    summary = json.loads(resumed.stdout)
    assert summary["best"]["key"] in keys
    assert (out / "best" / "model" / "config.json").is_file()


def test_two_processes_share_one_study(tmp_path):
    out = tmp_path / "search"
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    argv = command(out, "--storage", storage, "--study", "shared", "--json")
    workers = [subprocess.Popen(argv, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = [worker.communicate(timeout=900) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # which worker measures what is timing (a worker that starts late may find the grid done);
    # that they share is what the counts show: unshared, each would measure all 8
    assert {t.user_attrs["worker"] for t in trials} <= {f"{os.uname().nodename}:{w.pid}" for w in workers}
    keys = Counter(t.user_attrs["key"] for t in trials)
    assert len(keys) == 8  # the grid is covered between them
    assert sum(keys.values()) - len(keys) <= 1  # at most one configuration taken by both in a race
    answers = {json.loads(stdout)["best"]["key"] for stdout, _ in results}
    assert len(answers) == 1
