"""Tests of the template plugin, run after ``pip install -e .``.

``prunekit_plugins`` and ``tiny_model`` are fixtures from prunekit's pytest plugin
(``prunekit.plugins.testing``): installing prunekit makes them available to every test suite.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import prunekit_template
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.payloads import Dimension, ScoreRequest


def core(*args: object):
    """``core ARGS`` in-process, as a user would type it."""
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_installed_package_is_an_entry_point_plugin(prunekit_plugins):
    info = {i.name: i for i in prunekit_plugins.infos()}[prunekit_template.NAME]
    assert info.distribution == "prunekit-template"
    assert info.hooks == ("plugin_options", "score_importance")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_scores_are_the_l1_norms_of_the_output_projection_columns(family, tiny_model, prunekit_plugins):
    model = tiny_model(family)
    architecture = prunekit_plugins.hooks([]).architecture_for(model)
    request = ScoreRequest(model, architecture, RunConfig(model=f"tiny-{family}", ratio=0.5))
    [importance] = prunekit_template.score_importance(request)
    assert importance.dimension is Dimension.FFN
    for layer, scores in zip(architecture.layers(model), importance.scores):
        if family == "llama":  # Linear: [hidden, channels]
            expected = layer.mlp.down_proj.weight.abs().sum(dim=0)
        else:  # GPT-2's Conv1D stores [channels, hidden]
            expected = layer.mlp.c_proj.weight.abs().sum(dim=1)
        torch.testing.assert_close(scores, expected)


def test_a_run_keeps_exactly_the_channels_with_the_largest_columns(tiny_model, tmp_path):
    result = core("run", "--model", "tiny-llama", "--plugins", prunekit_template.NAME, "--ratio", "0.5",
                  "--output", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pruning"]["ffn"]["criterion"] == "L1 norm of output-projection columns"
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    original = tiny_model("llama")
    for before, after in zip(original.model.layers, pruned.model.layers):
        down = before.mlp.down_proj.weight
        kept = torch.sort(down.abs().sum(dim=0).topk(64).indices).values
        assert torch.equal(after.mlp.down_proj.weight, down[:, kept])
        assert torch.equal(after.mlp.gate_proj.weight, before.mlp.gate_proj.weight[kept])


def test_settings_reach_the_plugin_and_bad_ones_are_one_line_errors(tmp_path):
    name = prunekit_template.NAME
    result = core("run", "--model", "tiny-llama", "--plugins", name, "--ratio", "0.5", "-o", f"{name}.p=2",
                  "--output", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pruning"]["ffn"]["criterion"] == "L2 norm of output-projection columns"
    assert report["config"]["options"][name] == {"p": 2.0}

    result = core("run", "--model", "tiny-llama", "--plugins", name, "-o", f"{name}.p=0.5")
    assert result.exit_code == 2
    assert result.stderr == f"Error: invalid config: options.{name}.p: Input should be greater than or equal to 1 (got 0.5)\n"
