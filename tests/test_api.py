"""``prunekit.run`` is ``core run`` from Python; Ctrl-C in either says what was kept, in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import prunekit
from prunekit.cli import app
from prunekit.errors import UsageError

CORE = Path(sys.executable).parent / "core"
OPTIONS = {"perplexity": {"windows": 1, "length": 64}, "latency": {"repeats": 1, "warmup": 0, "new_tokens": 2},
           "generation": {"new_tokens": 4}}


def test_run_from_python_writes_and_returns_what_the_command_line_does(tmp_path):
    report = prunekit.run(model="tiny-llama", plugins=["random"], ratio=0.5, output=tmp_path / "api", options=OPTIONS)
    assert json.loads((tmp_path / "api" / "report.json").read_text()) == json.loads(report.model_dump_json())
    flags = [f"-o{plugin}.{key}={value}" for plugin, values in OPTIONS.items() for key, value in values.items()]
    result = CliRunner().invoke(app, ["run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.5",
                                      "--output", str(tmp_path / "cli"), "--json", *flags])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    assert cli["params"] == json.loads(report.params.model_dump_json())
    assert cli["metrics"]["after"]["perplexity"] == report.metrics["after"].perplexity
    assert cli["metrics"]["after"]["details"]["generation"] == report.metrics["after"].details["generation"]


def test_bad_input_from_python_raises_before_anything_is_written(tmp_path):
    with pytest.raises(UsageError, match="ratio"):
        prunekit.run(model="tiny-llama", plugins=["random"], ratio=1.5, output=tmp_path / "run")
    with pytest.raises(UsageError, match="unknown plugin"):
        prunekit.run(model="tiny-llama", plugins=["no-such-plugin"], ratio=0.5, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ctrl_c_during_recovery_says_what_was_kept_and_the_rerun_resumes(tmp_path):
    """Real SIGINT to a real process, training LoRA on the packaged text from outside the checkout."""
    out = tmp_path / "run"
    argv = [str(CORE), "run", "--model", "tiny-llama", "--plugins", "random,lora", "--ratio", "0.5",
            "--output", str(out), "-o", "lora.sequence_length=32", "-o", "lora.eval_every=10", "-o", "lora.steps=100",
            "-o", "perplexity.windows=1", "-o", "perplexity.length=64", "-o", "latency.repeats=1"]
    env = {**os.environ, "PRUNEKIT_NO_PROGRESS": "1"}
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit that (Python
    # then installs no KeyboardInterrupt handler): the child gets the default disposition whatever ran pytest.
    process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    trainer = out / "checkpoints" / "lora" / "trainer"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not list(trainer.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("Interrupted: no result was saved; training checkpoints in ")
    assert f"rerun the same command with --output {out} to resume" in " ".join(stderr.split())
    assert not (out / "model").exists() and not (out / "report.json").exists()

    resumed = subprocess.run([*argv, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["recovery"][0]["report"]["resumed_from"].startswith("checkpoint-")
