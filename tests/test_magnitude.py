"""``magnitude``: FFN channels ranked by the L2 norm of their input-projection rows, every family."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.plugins.surgery import input_weight_columns
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.manager import get_plugins
from prunekit.payloads import ScoreRequest
from prunekit.plugins import magnitude
from prunekit.plugins.models.tiny import FAMILIES, FFN, tiny_model
from prunekit.slicing import kept_units


class Unmeasured:
    """Naming an evaluator that measures nothing keeps the default evaluators out of the run."""

    @hookimpl
    def evaluate(self, request):
        return None


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_are_the_row_norms_of_the_ffn_input_projection(family):
    model = tiny_model(family)
    architecture = get_plugins().hooks([]).architecture_for(model)
    request = ScoreRequest(model, architecture, RunConfig(model="tiny", plugins=["magnitude"], ratio=0.3))
    [importance] = magnitude.score_importance(request)
    assert importance.report["criterion"] == "L2 norm of FFN input-projection rows"
    first = architecture.ffn_inputs[0]
    for layer, scores in zip(architecture.layers(model), importance.scores):
        rows = input_weight_columns(layer.get_submodule(first))  # [channels, hidden] for any family
        assert scores.shape == (FFN,)
        assert torch.allclose(scores, torch.linalg.vector_norm(rows.detach(), dim=1))


@pytest.mark.parametrize(("family", "projection"), [("llama", "mlp.gate_proj"), ("gpt2", "mlp.c_fc")])
def test_run_keeps_the_largest_rows_and_reloads_with_stock_transformers(family, projection, tmp_path, register_plugin):
    register_plugin(Unmeasured(), "unmeasured")
    result = CliRunner().invoke(app, ["run", "--model", f"tiny-{family}", "--plugins", "magnitude,unmeasured",
                                      "--ratio", "0.5", "--output", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pruning"]["ffn"]["criterion"] == "L2 norm of FFN input-projection rows"

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    original = tiny_model(family)
    architecture = get_plugins().hooks([]).architecture_for(original)
    for before, after in zip(architecture.layers(original), architecture.layers(reloaded)):
        rows = input_weight_columns(before.get_submodule(projection)).detach()
        keep = torch.sort(rows.norm(dim=1).topk(kept_units(FFN, 0.5)).indices).values
        assert torch.equal(input_weight_columns(after.get_submodule(projection)), rows[keep])
