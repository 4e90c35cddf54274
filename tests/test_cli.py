"""The CLI contract: end-to-end runs through a test plugin, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import __version__, hookimpl
from prunekit.cli import app
from prunekit.payloads import Dimension, Importance, Metrics, Recovery

from conftest import assert_one_line_error

runner = CliRunner()


class Recorder:
    """A plugin that implements every pipeline hook and records the order it was called in."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def score_importance(self, request):
        self.calls.append("score_importance")
        arch = request.architecture
        scores = [arch.ffn_input_weight(layer).norm(dim=1) for layer in arch.layers(request.model)]
        return [Importance(Dimension.FFN, scores, report={"criterion": "row norm"})]

    @hookimpl
    def recover(self, request):
        self.calls.append("recover")
        return Recovery(request.model, report={"steps": 0})

    @hookimpl
    def evaluate(self, request):
        self.calls.append(f"evaluate:{request.stage}")
        return Metrics(extra={"parameters": float(sum(p.numel() for p in request.model.parameters()))})


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"prunekit {__version__}"


def test_python_dash_m_prunekit_runs_the_command_line():
    """The command line loads whichever of its modules is imported first (no import cycle)."""
    result = subprocess.run([sys.executable, "-m", "prunekit", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"prunekit {__version__}"


def test_plugins_list_json_shows_builtins_with_source_and_hooks():
    result = invoke("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["random"]["source"] == "builtin"
    assert rows["random"]["hooks"] == ["plugin_options", "score_importance"]
    assert rows["slicer"]["core"] is True


def test_plugins_list_table():
    result = invoke("plugins", "list")
    assert result.exit_code == 0 and "random" in result.stdout and "builtin" in result.stdout


def test_run_calls_every_hook_in_order_and_writes_a_stock_model(register_plugin, tmp_path):
    recorder = Recorder()
    register_plugin(recorder, "recorder")
    out = tmp_path / "run"
    result = invoke("run", "--model", "tiny-llama", "--plugins", "recorder", "--ratio", "0.5",
                    "--output", str(out), "--json")
    assert result.exit_code == 0, result.output
    # the one recovery step's "after" is the run's "after": the same model, measured once
    assert recorder.calls == ["evaluate:before", "score_importance", "evaluate:recovery", "recover", "evaluate:after"]

    report = json.loads(result.stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# prunekit run: tiny-llama")
    assert report["plugins"] == ["recorder"] and report["ratio"] == 0.5 and report["stock"] is True
    assert report["pruning"] == {"ffn": {"criterion": "row norm"}}
    [step] = report["recovery"]
    assert step["plugin"] == "recorder" and step["report"] == {"steps": 0}
    assert report["metrics"]["after"]["extra"]["parameters"] == report["params"]["after"]
    assert report["params"]["after"] < report["params"]["before"]
    assert set(report["timings"]) == {"load", "evaluate_before", "score", "slice", "recover", "evaluate_after", "save"}
    # the run's peak covers every stage's, although measuring a stage resets the kernel's maximum
    assert report["peak_rss_mb"] >= max(stage["peak_mb"] for stage in report["memory"].values())
    assert {"torch", "transformers", "python"} <= set(report["versions"])

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]
    assert model.config.intermediate_size == 64  # tiny models have 128 channels; half removed
    assert not any(path.name.endswith(".bin") for path in (out / "model").iterdir())
    assert (out / "model" / "tokenizer_config.json").exists()
    assert not list(tmp_path.glob(".*tmp*")) and not list(out.glob(".*tmp*"))


def test_unselected_plugins_are_not_called(register_plugin, tmp_path):
    chosen, bystander = Recorder(), Recorder()
    register_plugin(chosen, "chosen")
    register_plugin(bystander, "bystander")
    result = invoke("run", "--model", "tiny-llama", "--plugins", "chosen", "--ratio", "0.25",
                    "--output", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    assert "score_importance" in chosen.calls and bystander.calls == []


def test_every_evaluator_measures_when_the_run_names_none(register_plugin, tmp_path):
    evaluator = Recorder()
    register_plugin(evaluator, "measure-all")
    result = invoke("run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.25",
                    "--output", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    assert evaluator.calls == ["evaluate:before", "evaluate:after"]


def test_config_file_with_flag_override(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('model = "tiny-llama"\nplugins = ["random"]\nratio = 0.75\nseed = 3\n')
    result = invoke("run", "--config", str(config), "--ratio", "0.5", "--output", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ratio"] == 0.5 and report["config"]["seed"] == 3


def test_human_output_is_a_table(tmp_path):
    result = invoke("run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.5",
                    "--output", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stdout and "Wrote" in result.stdout


def test_eval_json(register_plugin):
    register_plugin(Recorder(), "measure")
    result = invoke("eval", "--model", "tiny-gpt2", "--json")
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    assert evaluation["params"] == evaluation["metrics"]["extra"]["parameters"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--plugins", "does-not-exist"], ["unknown plugin 'does-not-exist'; available:", "random"]),
        (["--plugins", "random", "--ratio", "1.5"], ["ratio: Input should be less than 1"]),
        (["--plugins", "random", "--ratio", "-0.2"], ["ratio: Input should be greater than or equal to 0"]),
        (["--ratio", "0.3"], ["ratio 0.3 needs a pruner"]),
        (["--plugins", "random", "--dtype", "float8"], ["dtype: Input should be"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragments):
    result = invoke("run", "--model", "tiny-llama", "--output", str(tmp_path / "run"), *args)
    assert_one_line_error(result, "Error: ", *fragments)
    assert not (tmp_path / "run").exists()


def test_missing_model_path(tmp_path):
    result = invoke("run", "--model", str(tmp_path / "no-such-model"), "--plugins", "random")
    assert_one_line_error(result, "model path does not exist")


def test_a_dimension_the_derived_adapter_cannot_place_is_refused_with_the_reason(tmp_path):
    from transformers import BloomConfig, BloomForCausalLM

    model_dir = tmp_path / "bloom"  # BLOOM's FFN is 4 x hidden_size, which no config field can change
    BloomForCausalLM(BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=64)).save_pretrained(model_dir)
    result = invoke("run", "--model", str(model_dir), "--plugins", "random", "--ratio", "0.3",
                    "--output", str(tmp_path / "run"))
    # the pruner names its dimensions when it scores, after the "before" measurement has warned
    # that this bare checkpoint has no tokenizer; the error is still one line, and the last
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == ("Error: bloom models cannot be sliced along ffn into a stock "
                                                      "checkpoint: no config field sets the FFN width")
    assert not (tmp_path / "run").exists()


def test_a_model_whose_decoder_layers_cannot_be_placed_is_refused_in_one_line(tmp_path):
    from prunekit.plugins.models.tiny import tiny_model

    model_dir = tmp_path / "hrm"  # hierarchical reasoning: two stacks of layers, neither num_hidden_layers long
    tiny_model("hrm_text").save_pretrained(model_dir)
    result = invoke("run", "--model", str(model_dir), "--plugins", "random", "--ratio", "0.3",
                    "--output", str(tmp_path / "run"))
    assert_one_line_error(result, "cannot slice 'hrm_text' models: cannot place the decoder layers")


def test_an_encoder_decoder_model_is_refused_in_one_line_not_with_every_class_transformers_maps(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    model_dir = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=64,
                                        d_kv=16)).save_pretrained(model_dir)
    result = invoke("run", "--model", str(model_dir), "--plugins", "random", "--ratio", "0.3",
                    "--output", str(tmp_path / "run"))
    assert_one_line_error(result, "'t5' is not a decoder model that AutoModelForCausalLM builds")
    assert len(result.stderr) < 300


def test_malformed_config_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: [tiny-llama\n")
    assert_one_line_error(invoke("run", "--config", str(config)), "cannot parse config file")


def test_config_file_with_a_wrong_field_type_names_the_field(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: tiny-llama\nseed: lots\n")
    assert_one_line_error(invoke("run", "--config", str(config)), "invalid config: seed: Input should be a valid integer")


def test_an_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("{}")
    result = invoke("run", "--model", "tiny-llama", "--plugins", "random", "--output", str(out))
    assert_one_line_error(result, "output directory already holds a run")
    assert (out / "report.json").read_text() == "{}"


def test_non_numeric_ratio_is_a_usage_error():
    result = invoke("run", "--model", "tiny-llama", "--ratio", "lots")
    assert result.exit_code == 2


def test_a_failing_plugin_exits_1_with_one_line(register_plugin, tmp_path):
    class Failing:
        @hookimpl
        def score_importance(self, request):
            raise ValueError("scores went NaN")

    register_plugin(Failing(), "failing")
    result = invoke("run", "--model", "tiny-llama", "--plugins", "failing", "--ratio", "0.3",
                    "--output", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "ValueError: scores went NaN" in result.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_logits_unchanged_at_ratio_zero(tmp_path, tiny_model):
    result = invoke("run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0",
                    "--output", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    torch.testing.assert_close(saved(ids).logits, tiny_model("llama")(ids).logits)
