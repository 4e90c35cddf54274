"""Depth pruning in the core: a pruner scores whole decoder layers, the core keeps the top
``int((1 - ratio) * layers)`` and drops the rest through the architecture, into a stock checkpoint."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.cli import app
from prunekit.payloads import Dimension, Importance
from prunekit.plugins.models.tiny import tiny_model
from prunekit.slicing import kept_layers

IDS = torch.randint(0, 257, (2, 12), generator=torch.Generator().manual_seed(1))


def depth(scores: list[float], keep_counts=None) -> Importance:
    return Importance(Dimension.LAYERS, [torch.tensor([s]) for s in scores], keep_counts)


def test_kept_layers_keeps_the_top_scores_in_order():
    assert kept_layers([depth([0.3, 0.1, 0.9, 0.2, 0.5])], 0.4, 5) == [0, 2, 4]
    assert kept_layers([depth([1.0, 1.0, 1.0])], 0.5, 3) == [0]  # ties keep the earlier layer
    assert kept_layers([Importance(Dimension.FFN, [torch.rand(4)] * 3)], 0.5, 3) is None


def test_thirty_layers_at_ratio_0_2_keep_twenty_four():
    assert len(kept_layers([depth(torch.rand(30).tolist())], 0.2, 30)) == 24


@pytest.mark.parametrize(
    ("importances", "message"),
    [
        ([depth([0.1, 0.2])], "layers scores cover 2 layers, the model has 3"),
        ([Importance(Dimension.LAYERS, [torch.rand(2)] * 3)], "layer 0: 2 layers scores, expected one"),
        ([depth([0.1, float("nan"), 0.3])], "layers scores contain NaN or Inf"),
        ([depth([0.1, 0.2, 0.3], keep_counts=[1, 1, 0])], "keep_counts does not apply to layers"),
        ([depth([0.1, 0.2, 0.3])] * 2, "scored layers 2 times"),
    ],
)
def test_kept_layers_rejects_a_pruners_malformed_scores(importances, message):
    with pytest.raises(RuntimeError, match=message):
        kept_layers(importances, 0.5, 3)


class FixedScores:
    """A pruner with known verdicts: layer 0 is the one to drop, FFN channels ranked by index."""

    @hookimpl
    def score_importance(self, request):
        arch = request.architecture
        layers = arch.layers(request.model)
        return [
            Importance(Dimension.LAYERS, [torch.tensor([0.0]), torch.tensor([1.0])], report={"by": "fixed"}),
            Importance(Dimension.FFN, [torch.arange(float(arch.units(layer, Dimension.FFN))) for layer in layers]),
        ]


def run_cli(tmp_path, *args: str) -> dict:
    result = CliRunner().invoke(app, ["run", "--output", str(tmp_path / "run"), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_dropped_layers_and_sliced_survivors_are_exactly_the_planned_ones(family, register_plugin, tmp_path):
    register_plugin(FixedScores(), "fixed")
    report = run_cli(tmp_path, "--model", f"tiny-{family}", "--plugins", "fixed", "--ratio", "0.5")
    assert report["pruning"]["layers"] == {"by": "fixed", "removed_layers": [0]}
    assert report["stock"] is True

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert saved.config.num_hidden_layers == 1
    original = tiny_model(family)
    arch_layers = {"llama": lambda m: m.model.layers, "gpt2": lambda m: m.transformer.h}[family]
    kept_channels = torch.arange(64, 128)  # the top half by index, from the original layer 1's plan
    survivor = copy.deepcopy(arch_layers(original)[1])
    if family == "llama":
        expected = {"mlp.gate_proj.weight": survivor.mlp.gate_proj.weight[kept_channels],
                    "mlp.down_proj.weight": survivor.mlp.down_proj.weight[:, kept_channels],
                    "self_attn.q_proj.weight": survivor.self_attn.q_proj.weight}
    else:
        expected = {"mlp.c_fc.weight": survivor.mlp.c_fc.weight[:, kept_channels],
                    "mlp.c_proj.weight": survivor.mlp.c_proj.weight[kept_channels],
                    "attn.c_attn.weight": survivor.attn.c_attn.weight}
    state = arch_layers(saved)[0].state_dict()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_random_pruner_drops_layers_too(tmp_path):
    report = run_cli(tmp_path, "--model", "tiny-qwen2", "--plugins", "random", "--ratio", "0.5",
                     "-o", "random.dimensions=[layers]")
    assert len(report["pruning"]["layers"]["removed_layers"]) == 1
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert saved.config.num_hidden_layers == 1 and len(saved.config.layer_types) == 1
    assert report["params"]["after"] < report["params"]["before"]
    with torch.no_grad():
        assert torch.isfinite(saved(IDS).logits).all()
