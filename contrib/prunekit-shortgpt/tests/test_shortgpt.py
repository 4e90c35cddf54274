"""ShortGPT as a user meets it: installed by pip, named in ``--plugins``, checked for exactness.

The fixtures ``prunekit_plugins`` and ``tiny_model`` come from prunekit's pytest plugin
(``prunekit.plugins.testing``), which installing prunekit makes available to every test suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import prunekit_shortgpt
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.plugins.data import training_text
from prunekit.payloads import ScoreRequest
from prunekit.plugins.models.tiny import tokenizer as tiny_tokenizer
from prunekit_shortgpt import block_influence

IDS = torch.randint(0, 257, (3, 24), generator=torch.Generator().manual_seed(0))
TEXT = " ".join(f"Sentence {i} says that the number {i * 7 % 13} follows {i}." for i in range(400))


@pytest.fixture
def calibration_text(tmp_path):
    path = tmp_path / "calibration.txt"
    path.write_text(TEXT)
    return path


def core(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_installed_package_is_an_entry_point_plugin(prunekit_plugins):
    info = {i.name: i for i in prunekit_plugins.infos()}["shortgpt"]
    assert info.distribution == "prunekit-shortgpt"
    assert info.hooks == ("plugin_options", "score_importance")


def test_block_influence_is_one_minus_the_cosine_of_a_layers_input_and_output(tiny_model):
    model = tiny_model("llama")
    layers = model.model.layers
    hooks = [(dict(layer._forward_hooks), dict(layer._forward_pre_hooks)) for layer in layers]
    influence = block_influence(model, layers, [IDS[:2], IDS[2:]])
    assert [(dict(layer._forward_hooks), dict(layer._forward_pre_hooks)) for layer in layers] == hooks
    with torch.no_grad():
        states = model(IDS, output_hidden_states=True).hidden_states  # [embeddings, layer 0 out, ...]
    expected = 1 - F.cosine_similarity(states[0], states[1], dim=-1).double().mean()
    torch.testing.assert_close(influence[0], expected, rtol=0, atol=1e-6)
    assert influence.shape == (2,) and (influence > 0.01).all()


def make_identity(model, family: str, index: int) -> None:
    """Zero what layer ``index`` writes into the residual stream, so its output equals its input."""
    with torch.no_grad():
        if family == "llama":
            layer = model.model.layers[index]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        else:
            layer = model.transformer.h[index]
            for projection in (layer.attn.c_proj, layer.mlp.c_proj):
                projection.weight.zero_()
                projection.bias.zero_()


@pytest.mark.parametrize(("family", "identity"), [("llama", 1), ("gpt2", 0)])
def test_a_layer_that_changes_nothing_is_the_one_removed_and_the_logits_stay_the_same(
    family, identity, tiny_model, calibration_text, tmp_path
):
    model = tiny_model(family)
    make_identity(model, family, identity)
    source = tmp_path / "source"
    model.save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)

    result = core("run", "--model", source, "--plugins", "shortgpt", "--ratio", "0.5",
                  "-o", f"shortgpt.data={calibration_text}", "-o", "shortgpt.samples=4", "-o", "shortgpt.length=64",
                  "--output", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["pruning"]["layers"]
    assert report["removed_layers"] == [identity]
    assert abs(report["block_influence"][identity]) < 1e-6 < report["block_influence"][1 - identity]
    assert report["data"]["tokens"] == 4 * 64 and report["data"]["source"] == str(calibration_text)

    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert pruned.config.num_hidden_layers == 1
    with torch.no_grad():
        torch.testing.assert_close(pruned(IDS).logits, model(IDS).logits, rtol=0, atol=0)


def test_scores_are_seeded_and_reproducible(tiny_model, prunekit_plugins, calibration_text):
    model = tiny_model("qwen2")
    architecture = prunekit_plugins.hooks([]).architecture_for(model)

    def influence(seed: int) -> list[float]:
        config = RunConfig(model="tiny-qwen2", plugins=["shortgpt"], ratio=0.5, seed=seed,
                           options={"shortgpt": {"data": str(calibration_text), "samples": 2}})
        request = ScoreRequest(model, architecture, config, tokenizer=tiny_tokenizer())
        [importance] = prunekit_shortgpt.score_importance(request)
        return importance.report["block_influence"]

    assert influence(3) == influence(3) != influence(4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", "shortgpt.samples=0"], "invalid config: options.shortgpt.samples: Input should be greater than or equal to 1"),
        (["-o", "shortgpt.windows=3"], "invalid config: options.shortgpt.windows: Extra inputs are not permitted"),
        (["-o", "shortgpt.data=/no/such/file.txt"], "data file not found: /no/such/file.txt"),
        (["-o", "shortgpt.length=100000"], f"the text has {len(TEXT)} tokens, fewer than one sample of 100000"),
    ],
)
def test_bad_settings_are_one_line_errors_with_exit_2(options, message, calibration_text, tmp_path):
    extra = [] if any("data=" in o for o in options) else ["-o", f"shortgpt.data={calibration_text}"]
    result = core("run", "--model", "tiny-llama", "--plugins", "shortgpt", "--ratio", "0.5", *options, *extra,
                  "--output", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_without_data_it_calibrates_on_prunekits_packaged_text_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)  # ../shared/data does not exist from here
    result = core("run", "--model", "tiny-llama", "--plugins", "shortgpt", "--ratio", "0.5", "-o", "shortgpt.samples=2",
                  "-o", "shortgpt.length=32", "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())["pruning"]["layers"]
    assert report["data"]["source"] == training_text() and Path(training_text()).is_dir()
    assert report["data"]["disjoint_from_evaluation"] is True
