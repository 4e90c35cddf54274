"""The report's parameter breakdown: decoder layers, each dimension's units, the rest, and shares."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from prunekit.cli import app
from prunekit.manager import get_plugins
from prunekit.output import Count, Params
from prunekit.payloads import Dimension
from prunekit.pipeline import count_parameters, parameter_parts
from prunekit.plugins.models.tiny import tiny_model
from prunekit.rendering import reach_line
from prunekit.slicing import kept_units


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("family", ["gemma3_text", "llama", "gpt2", "opt", "phi3", "gpt_neox"])
def test_a_dimensions_parameters_are_what_slicing_its_units_removes(family):
    model = tiny_model(family)
    architecture = get_plugins().hooks([]).architecture_for(model)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    inside, units = parameter_parts(model, architecture)
    assert inside == count_parameters(architecture.layers(model)) < count_parameters(model)
    assert "ffn" in units and "layers" not in units
    # counting sliced shape-only copies: the model itself is untouched and stays where it was
    assert all(torch.equal(state[name], tensor) and tensor.device.type == "cpu"
               for name, tensor in model.state_dict().items())
    for name, held in units.items():
        dimension = Dimension(name)
        sliced = copy.deepcopy(model)
        total = architecture.units(architecture.layers(sliced)[0], dimension)
        keep = kept_units(total, 0.5)
        for layer in architecture.layers(sliced):
            architecture.slice(layer, dimension, torch.arange(keep))
        assert count_parameters(model) - count_parameters(sliced) == held * (total - keep) // total
        assert parameter_parts(sliced, architecture)[1][name] == held * keep // total


def test_a_run_reports_the_share_of_the_model_each_part_holds(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--model", "tiny-gemma3_text", "--plugins", "magnitude",
                                      "--ratio", "0.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    params = json.loads((out / "report.json").read_text())["params"]
    layers, hidden, channels, kept = 2, 64, 96, 48  # tiny Gemma 3: 4 query heads of 16, 2 KV groups
    ffn = {"before": layers * 3 * hidden * channels, "after": layers * 3 * hidden * kept}
    heads = layers * (2 * hidden * 4 * 16 + 2 * hidden * 2 * 16)
    assert params["units"] == {"ffn": ffn, "heads": {"before": heads, "after": heads}}
    removed = ffn["before"] - ffn["after"]
    assert params["before"] - params["after"] == removed
    assert params["decoder_layers"]["before"] - params["decoder_layers"]["after"] == removed
    outside = params["outside_layers"]
    assert outside["before"] == outside["after"] == params["before"] - params["decoder_layers"]["before"]
    assert outside["before"] == 257 * hidden + hidden  # the tied embedding and head, the final norm
    share = params["share"]
    assert share["decoder_layers"] + share["outside_layers"] == pytest.approx(1)
    assert share["ffn"] == pytest.approx(ffn["before"] / params["before"])

    markdown = (out / "report.md").read_text()
    assert "| parameters | before | after | share of the model before |" in markdown
    assert f"| ffn units | {ffn['before']:,} | {ffn['after']:,} | {share['ffn']:.1%} |" in markdown
    assert f"| outside the layers | {outside['before']:,} | {outside['after']:,} |" in markdown
    assert (f"- reach: of the parameters, the ffn units hold {share['ffn']:.1%} (the most slicing them can "
            f"remove); {share['outside_layers']:.1%} lie outside the decoder layers") in markdown
    assert f"ffn units ({share['ffn']:.0%})" in result.stdout and "Reach: of the parameters" in result.stdout


def test_the_reach_of_depth_is_the_decoder_layers_and_of_the_hidden_width_not_stated():
    params = Params(before=1000, after=700, decoder_layers=Count(before=400, after=100),
                    units={"ffn": Count(before=300, after=300), "heads": Count(before=80, after=80)})
    assert params.outside_layers == Count(before=600, after=600)
    assert params.share == {"decoder_layers": 0.4, "outside_layers": 0.6, "ffn": 0.3, "heads": 0.08}
    assert reach_line(params, ["layers"]) == (
        "reach: of the parameters, the decoder layers hold 40.0% (the most slicing them can remove); "
        "60.0% lie outside the decoder layers (embeddings, head, final norm)")
    assert "the ffn units hold 30.0%, the heads units hold 8.0%" in reach_line(params, ["ffn", "heads"])
    assert reach_line(params, ["hidden"]) is None
    assert reach_line(Params(before=10, after=5), ["ffn"]) is None  # nothing counted: nothing said
