"""With ``--json``, stdout carries the JSON document and nothing else, whatever a library prints.

Every ``--json`` command runs in a fresh interpreter, as a user or a script would run it, and its
stdout goes to ``json.loads``. The commands that evaluate use a local lm-eval task whose metric
lm-eval bootstraps a standard error for: lm-eval then ``print``s "bootstrapping for stddev:
perplexity" (to stdout, from this process and from its worker processes). They run in a folder
outside any git repository, where lm-eval's ``git describe`` would print "fatal: not a git
repository" on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunekit.cli_shared import emit_json, json_stdout

BOOTSTRAP = "bootstrapping for stddev: perplexity"

QUICK = [
    "-o", "latency.repeats=1", "-o", "latency.warmup=0", "-o", "latency.prompt_tokens=16", "-o", "latency.new_tokens=4",
    "-o", "perplexity.windows=1", "-o", "perplexity.length=64",
]


def environment(cwd: Path) -> dict[str, str]:
    """A fresh process's (none of the Hub and transformers settings earlier in-process commands
    left in this one); git looks for a repository no higher than ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, "PRUNEKIT_NO_PROGRESS": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
            "GIT_CEILING_DIRECTORIES": str(cwd.parent)}


def core_json(cwd: Path, *args: str) -> tuple[object, str]:
    """``core ARGS --json`` in ``cwd``: the parsed stdout and the stderr."""
    result = subprocess.run([sys.executable, "-m", "prunekit", *args, "--json"], capture_output=True, text=True,
                            cwd=cwd, env=environment(cwd), timeout=300)
    assert result.returncode == 0, result.stderr
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{result.stdout[:2000]}") from exc
    assert "fatal:" not in result.stderr, result.stderr
    return document, result.stderr


@pytest.fixture
def bootstrapped_task(tmp_path) -> Path:
    """A folder with one loglikelihood task scored by perplexity, which lm-eval bootstraps."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    lines = ["the cat sat on the mat", "one two three four five", "red green blue yellow", "a b c d e f"]
    (folder / "lastword.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    (folder / "lastword.yaml").write_text(textwrap.dedent("""\
        task: lastword_local
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: lastword.jsonl
        output_type: loglikelihood
        test_split: test
        doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
        doc_to_target: "{{' '+text.split(' ')[-1]}}"
        metric_list:
          - metric: perplexity
            aggregation: perplexity
            higher_is_better: false
        metadata:
          version: 1.0
        """))
    return folder


def test_eval_json_is_alone_on_stdout_when_lm_eval_prints(bootstrapped_task, tmp_path):
    evaluation, stderr = core_json(tmp_path, "eval", "--model", "tiny-llama", "--tasks", f"local:{bootstrapped_task}",
                                   "--limit", "4", *QUICK)
    assert evaluation["metrics"]["tasks"]["lastword_local"]["perplexity"] > 0
    assert BOOTSTRAP in stderr  # the task really makes lm-eval print: on stderr now


def test_run_json_is_alone_on_stdout_when_lm_eval_prints(bootstrapped_task, tmp_path):
    out = tmp_path / "run"
    report, stderr = core_json(tmp_path, "run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.3",
                               "--tasks", f"local:{bootstrapped_task}", "--limit", "4", "--output", str(out), *QUICK)
    assert report == json.loads((out / "report.json").read_text())
    assert "lastword_local" in report["metrics"]["after"]["tasks"]
    assert stderr.count(BOOTSTRAP) == 2  # before and after


@pytest.mark.parametrize(
    "args", [["plugins", "list"], ["plugins", "list", "--hooks"], ["plugins", "show", "zeroshot"]],
    ids=["plugins list", "plugins list --hooks", "plugins show"],
)
def test_plugins_json(tmp_path, args):
    document, stderr = core_json(tmp_path, *args)
    assert document and stderr == ""


@pytest.mark.slow  # a search's reference, trials and timings: about 20 s
def test_search_json_is_alone_on_stdout_when_lm_eval_prints(bootstrapped_task, tmp_path):
    """A Pareto search (no budget, so no chosen run): quality on the bootstrapped task."""
    summary, stderr = core_json(
        tmp_path, "search", "--model", "tiny-llama", "--plugins", "random", "--ratios", "0.25,0.5",
        "--output", str(tmp_path / "search"), "--batches", "2", "--windows", "1", "--window-length", "64",
        "--examples", "4", "--tasks", f"local:{bootstrapped_task}", *QUICK,
    )
    assert set(summary["pareto"]) <= {"random ffn=0.25", "random ffn=0.5"} and summary["pareto"]
    assert BOOTSTRAP in stderr


@pytest.mark.slow  # three pipeline runs: about 20 s
def test_laws_json_is_alone_on_stdout_when_lm_eval_prints(bootstrapped_task, tmp_path):
    sweep = tmp_path / "sweep"
    fit, stderr = core_json(
        tmp_path, "laws", "sweep", "--model", "tiny-llama", "--plugins", "random", "--ratios", "0.2,0.4,0.6",
        "--recover-sizes", "0", "--tasks", f"local:{bootstrapped_task}", "--limit", "4", "--output", str(sweep), *QUICK,
    )
    assert fit == json.loads((sweep / "fit.json").read_text())
    assert BOOTSTRAP in stderr
    again, _ = core_json(tmp_path, "laws", "fit", str(sweep), "--output", str(tmp_path / "refit"))
    assert again["laws"].keys() == fit["laws"].keys()
    predictions, _ = core_json(tmp_path, "laws", "predict", "--fit", str(sweep / "fit.json"), "--ratio", "0.3")
    assert [p["metric"] for p in predictions] == list(fit["laws"])


MECHANISM = r"""
import ctypes, os, subprocess, sys
from prunekit.cli_shared import emit_json, json_stdout

print("before")
try:
    with json_stdout():
        print("a library's print")
        ctypes.CDLL(None).printf(b"C's printf\n")
        os.write(1, b"straight to descriptor 1\n")
        subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
        emit_json('{"answer": 42}')
        raise RuntimeError("the command fails")
except RuntimeError:
    pass
print("after")
"""


def test_json_stdout_sends_everything_but_the_document_to_stderr_and_restores_stdout(tmp_path):
    """Python's buffered prints, C's stdio buffers, raw writes and child processes all go to
    stderr; stdout is whole again after the block, which ended in an error."""
    result = subprocess.run([sys.executable, "-c", MECHANISM], capture_output=True, text=True, timeout=120,
                            env=environment(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'before\n{"answer": 42}\nafter\n'
    for line in ("a library's print", "C's printf", "straight to descriptor 1", "a child process"):
        assert line in result.stderr.splitlines()


def test_without_a_descriptor_stdout_is_swapped_for_stderr(capsys):
    """Under pytest's capsys (or click's CliRunner) stdout has no file descriptor to point elsewhere."""
    with json_stdout():
        print("a library's print")
        emit_json("[1, 2]")
    print("after")
    out, err = capsys.readouterr()
    assert out == "[1, 2]\nafter\n" and err == "a library's print\n"
