"""The run directory's contract (prunekit.rundir): whose files it may write among, what a rerun of
the same command does with it, and the refusals of runs that would silently ignore a plugin or
save a broken model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.cli import app
from prunekit.payloads import Dimension, ModelSlice, Recovery

runner = CliRunner()


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run(out, *extra: str, plugins: str = "random,probe", ratio: str = "0.5"):
    return runner.invoke(app, ["run", "--model", "tiny-llama", "--plugins", plugins, "--ratio", ratio,
                               "--output", str(out), *extra])


@pytest.fixture
def probe(logits_probe):
    """A fast evaluator, so that each run here takes a fraction of a second."""
    return logits_probe(torch.arange(8).reshape(1, 8))


def test_a_folder_holding_someone_elses_file_is_refused_and_left_alone(tmp_path, probe):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_one_line_error(run(out), 2, "not empty and holds no run of this command", str(out))
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_empty_folder_is_used(tmp_path, probe):
    out = tmp_path / "empty"
    out.mkdir()
    assert run(out).exit_code == 0
    assert (out / "report.json").is_file() and (out / "model" / "model.safetensors").is_file()


def test_a_finished_run_of_the_same_command_is_redone_in_place(tmp_path, probe):
    out = tmp_path / "run"
    assert run(out).exit_code == 0
    first = load_file(out / "model" / "model.safetensors")
    again = run(out)
    assert again.exit_code == 0, again.output
    second = load_file(out / "model" / "model.safetensors")
    assert first.keys() == second.keys() and all(first[key].equal(second[key]) for key in first)
    assert sorted(path.name for path in out.iterdir()) == ["model", "report.json", "report.md", "run.json"]


def test_a_run_of_another_command_is_refused_naming_what_differs(tmp_path, probe):
    out = tmp_path / "run"
    assert run(out).exit_code == 0
    before = (out / "report.json").read_text()
    assert_one_line_error(run(out, "--seed", "3"), 2, "holds a run of another command", "differs in seed")
    assert_one_line_error(run(out, "--dtype", "float32"), 2, "differs in dtype")
    assert (out / "report.json").read_text() == before


def test_a_different_ratio_is_another_command(tmp_path, probe):
    out = tmp_path / "run"
    assert run(out).exit_code == 0
    assert_one_line_error(run(out, ratio="0.25"), 2, "differs in ratio")


def test_an_unreadable_command_record_is_refused(tmp_path, probe):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{not json")
    assert_one_line_error(run(out), 2, "cannot read", "run.json")


def test_the_command_record_is_the_resolved_config_without_output(tmp_path, probe):
    out = tmp_path / "run"
    assert run(out).exit_code == 0
    recorded = json.loads((out / "run.json").read_text())
    assert "output" not in recorded
    assert recorded["plugins"] == ["random", "probe"] and recorded["ratio"] == 0.5
    assert "random" in recorded["options"]  # defaults resolved, so a changed default is another command


# --- plugins a first-result hook would silently drop -----------------------------------------


def test_two_pruners_are_refused_naming_both(tmp_path, probe):
    line = assert_one_line_error(run(tmp_path / "run", plugins="random,magnitude,probe"), 2,
                                 "random and magnitude", "select one")
    assert "score importance" in line
    assert not (tmp_path / "run").exists()


class Slicer:
    """A whole-model slicer that slices nothing (and may poison a weight)."""

    def __init__(self, poison: bool = False) -> None:
        self.poison = poison

    @hookimpl
    def slice_model(self, request):
        if self.poison:
            with torch.no_grad():
                request.architecture.layers(request.model)[0].mlp.up_proj.weight[0, 0] = float("nan")
        return ModelSlice(Dimension.HIDDEN, stock=True, report={"method": "none"})


def test_two_whole_model_slicers_are_refused_naming_both(tmp_path, probe, register_plugin):
    register_plugin(Slicer(), "other-slicer")
    assert_one_line_error(run(tmp_path / "run", plugins="slicegpt,other-slicer,probe"), 2,
                          "slicegpt and other-slicer", "slice the whole model")
    assert not (tmp_path / "run").exists()


# --- a stage that breaks the model fails the run and saves nothing ----------------------------


class Poisoner:
    """A recovery that writes Inf into one weight."""

    @hookimpl
    def recover(self, request):
        with torch.no_grad():
            request.architecture.layers(request.model)[1].mlp.down_proj.weight[0, 0] = float("inf")
        return Recovery(request.model, report={})


def test_a_recovery_that_leaves_a_non_finite_weight_fails_naming_the_step(tmp_path, probe, register_plugin):
    register_plugin(Poisoner(), "poisoner")
    out = tmp_path / "run"
    assert_one_line_error(run(out, plugins="random,poisoner,probe"), 1,
                          "recover (poisoner) left non-finite values", "model.layers.1.mlp.down_proj.weight")
    assert not (out / "model").exists() and not (out / "report.json").exists() and not (out / "resume").exists()


def test_a_slice_that_leaves_a_non_finite_weight_fails_naming_the_stage(tmp_path, probe, register_plugin):
    register_plugin(Slicer(poison=True), "poison-slicer")
    out = tmp_path / "run"
    assert_one_line_error(run(out, plugins="poison-slicer,probe"), 1,
                          "slice left non-finite values", "model.layers.0.mlp.up_proj.weight")
    assert not out.exists()


def test_differences_name_plugin_settings_by_their_dotted_path():
    from prunekit.rundir import _differences

    recorded = {"ratio": 0.5, "options": {"lora": {"steps": 4, "rank": 8}, "random": {}}}
    current = {"ratio": 0.5, "options": {"lora": {"steps": 8, "rank": 8}}, "seed": 1}
    assert _differences(recorded, current) == ["options.lora.steps", "seed"]
