"""SIGKILL at every stage boundary of a run, then the same command again: the rerun finishes with
the model an uninterrupted run saves, tensor for tensor, and no kill leaves a directory that looks
finished (``report.json``) before it is. docs/interruptions.md tabulates what each kill keeps.

The kills are real: a child process runs ``core run`` with one stage wrapped to send itself
SIGKILL at that point (the wrapping is this test's, not prunekit's), so nothing can clean up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collections.abc import Callable

import pytest
from click.testing import Result
from safetensors.torch import load_file
from typer.testing import CliRunner

from prunekit.cli import app

pytestmark = pytest.mark.slow

CHILD = r"""
import os, signal, sys
from contextlib import contextmanager

point, argv = sys.argv[1], sys.argv[2:]


def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


from prunekit import pipeline
from prunekit.plugins.report import markdown

if point.startswith("after:"):  # the stage has finished, the next has not begun
    stage, original = point.removeprefix("after:"), pipeline.Stopwatch.stage

    @contextmanager
    def stage_then_die(self, name):
        with original(self, name):
            yield
        if name == stage:
            die()

    pipeline.Stopwatch.stage = stage_then_die
elif point.startswith("writing:"):  # half of the N-th model weights file written by save_pretrained
    import transformers.modeling_utils as modeling_utils

    target, original, calls = int(point.removeprefix("writing:")), modeling_utils.safe_save_file, []

    def half_then_die(tensors, filename, *args, **kwargs):
        original(tensors, filename, *args, **kwargs)
        if "checkpoints" in os.path.normpath(filename).split(os.sep):  # distill's trainer checkpoints are not counted
            return
        calls.append(filename)
        if len(calls) == target:
            with open(filename, "r+b") as file:
                file.truncate(os.path.getsize(filename) // 2)
            die()

    modeling_utils.safe_save_file = half_then_die
elif point == "before:report":  # the model is in place, the report not yet written
    def die_instead(*args, **kwargs):
        die()

    markdown.render_markdown = die_instead
sys.argv = ["core", *argv]
from prunekit.cli import main

main()
"""

# writing:1 is the kept compressed model (resume/), writing:2 the result (model/)
POINTS = ["after:score", "after:slice", "after:recover", "writing:1", "after:evaluate_after", "writing:2",
          "before:report"]
KEPT = {"after:evaluate_after", "writing:2", "before:report"}
PIPELINES = {
    "random": ["random"],
    "prunenet": ["prunenet", "-o", "prunenet.episodes=2"],
    "random,lora": ["random,lora", "-o", "lora.steps=4", "-o", "lora.eval_every=2", "-o", "lora.eval_sequences=2",
                    "-o", "lora.sequence_length=32", "-o", "lora.batch_size=2", "-o", "lora.rank=4"],
    "random,distill": ["random,distill", "-o", "distill.tokens=256", "-o", "distill.eval_every=2",
                       "-o", "distill.eval_sequences=2", "-o", "distill.sequence_length=32", "-o", "distill.batch_size=2"],
}


def environment(cache: Path) -> dict[str, str]:
    """A fresh process's environment (in-process CLI calls of other tests leave HF_* settings
    behind), with a cache of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, "PRUNEKIT_CACHE": str(cache), "PRUNEKIT_NO_PROGRESS": "1"}


def command(pipeline: str, output: Path) -> list[str]:
    plugins, *options = PIPELINES[pipeline]
    return ["run", "--model", "tiny-llama", "--plugins", f"{plugins},perplexity", "--ratio", "0.5",
            "-o", "perplexity.windows=1", *options, "--output", str(output)]


def killed(args: list[str], cache: Path, point: str) -> subprocess.CompletedProcess:
    """``core`` with ``args`` in a child process that SIGKILLs itself at ``point``."""
    return subprocess.run([sys.executable, "-c", CHILD, point, *args], env=environment(cache),
                          capture_output=True, text=True, timeout=300)


def core(args: list[str], cache: Path, monkeypatch) -> Result:
    """``core`` with ``args`` in this process (the reruns: a kill needs a process, a rerun not)."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    return CliRunner().invoke(app, args)


def weights(directory: Path) -> dict:
    return load_file(directory / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One directory for all runs, with one cache (PruneNet's trained policy), as a user's reruns
    share theirs."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture
def reference(root, monkeypatch) -> Callable[[str], dict]:
    """The weights each pipeline saves when nothing kills it."""

    def saved(pipeline: str) -> dict:
        out = root / f"reference-{pipeline.replace(',', '+')}"
        if not (out / "report.json").is_file():
            result = core(command(pipeline, out), root / "cache", monkeypatch)
            assert result.exit_code == 0, result.output
        return weights(out)

    return saved


DISTILL_POINTS = ["after:slice", "writing:1", "after:evaluate_after"]
"""``random,distill`` shares every stage but recovery with ``random,lora``: it is killed before training (the rerun
trains again, to the same weights), while keeping the trained model (the rerun resumes from the final trainer
checkpoint) and after the kept model (the rerun trains nothing)."""
CASES = [(pipeline, point) for pipeline in PIPELINES for point in POINTS
         if pipeline != "random,distill" or point in DISTILL_POINTS]


@pytest.mark.parametrize(("pipeline", "point"), CASES)
def test_a_rerun_after_a_kill_finishes_with_the_same_model(root, reference, pipeline, point, monkeypatch):
    expected = reference(pipeline)
    out = root / f"{pipeline.replace(',', '+')}-{point.replace(':', '-')}"
    child = killed(command(pipeline, out), root / "cache", point)
    assert child.returncode == -9, child.stderr
    assert not (out / "report.json").exists()  # nothing looks finished

    rerun = core(command(pipeline, out), root / "cache", monkeypatch)
    assert rerun.exit_code == 0, rerun.output
    resumed = weights(out)
    assert resumed.keys() == expected.keys()
    for key, tensor in expected.items():
        assert resumed[key].dtype == tensor.dtype and resumed[key].equal(tensor), key
    left = sorted(path.name for path in out.iterdir())
    plot = ["recovery.png"] if pipeline.startswith("random,") else []  # the training's curves
    assert left == sorted(["model", "report.json", "report.md", "run.json", *plot]), left  # no staging left behind
    # from the kept compressed model once it is whole; before that, the stages run again (and
    # LoRA and distillation resume from their trainer checkpoints)
    assert ("resuming the run" in rerun.stderr) == (point in KEPT), rerun.stderr
