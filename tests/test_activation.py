"""``activation``: weight x calibration-activation scores, computed layer by layer, sliced into a stock model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit.plugins.surgery import head_rows, input_weight_columns
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.manager import get_plugins
from prunekit.payloads import Dimension, ScoreRequest
from prunekit.plugins import activation
from prunekit.plugins.models.tiny import tiny_model, tokenizer

IDS = torch.randint(1, 257, (2, 12), generator=torch.Generator().manual_seed(0))
TEXT = "".join(f"sentence {i}: pruning keeps the units that write the most into the stream.\n" for i in range(300))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def score(model, corpus: str, **options):
    config = RunConfig(model="tiny", ratio=0.5, options={"activation": {
        "source": corpus, "count": 6, "length": 32, "batch_size": 4, **options}})
    architecture = get_plugins().hooks([]).architecture_for(model)
    request = ScoreRequest(model, architecture, config, tokenizer=tokenizer())
    return architecture, activation.score_importance(request)


def reference_inputs(model, architecture, dimension: Dimension, corpus: str) -> list[torch.Tensor]:
    """Every layer's output-projection inputs from one ordinary forward pass over the same samples."""
    from prunekit.plugins.calibration import CalibrationOptions, calibration_samples, resolve

    options = CalibrationOptions(source=corpus, count=6, length=32)
    samples = calibration_samples(tokenizer(), options, resolve(options, model, run_seed=0))
    seen: list[list[torch.Tensor]] = [[] for _ in architecture.layers(model)]
    handles = [architecture.output_projection(layer, dimension).register_forward_pre_hook(
        lambda module, args, index=index: seen[index].append(args[0].reshape(-1, args[0].shape[-1]).double()))
        for index, layer in enumerate(architecture.layers(model))]
    with torch.no_grad():
        model(samples, use_cache=False)
    for handle in handles:
        handle.remove()
    return [torch.cat(features) for features in seen]


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
def test_ffn_scores_are_column_norm_times_activation_norm(family, corpus):
    model = tiny_model(family)
    architecture, [importance] = score(model, corpus)
    inputs = reference_inputs(model, architecture, Dimension.FFN, corpus)
    assert importance.dimension is Dimension.FFN
    for layer, features, scores in zip(architecture.layers(model), inputs, importance.scores):
        columns = input_weight_columns(architecture.output_projection(layer, Dimension.FFN)).double().norm(dim=0)
        torch.testing.assert_close(scores, (columns * features.norm(dim=0)).float(), rtol=1e-5, atol=0)


def test_fluctuation_scores_and_head_groups(corpus):
    model = tiny_model("llama")  # 4 query heads in 2 KV groups of head_dim 16
    architecture, importances = score(model, corpus, metric="fluctuation", dimensions=["ffn", "heads"])
    by_dimension = {importance.dimension: importance for importance in importances}
    for dimension in (Dimension.FFN, Dimension.HEADS):
        inputs = reference_inputs(model, architecture, dimension, corpus)
        for layer, features, scores in zip(architecture.layers(model), inputs, by_dimension[dimension].scores):
            columns = input_weight_columns(architecture.output_projection(layer, dimension)).double().norm(dim=0)
            per_feature = features.var(dim=0, unbiased=False) * columns.square()
            if dimension is Dimension.HEADS:
                rows = head_rows(torch.arange(2), 2, 16).reshape(2, -1)
                per_feature = per_feature[rows].sum(1)
            torch.testing.assert_close(scores, per_feature.float(), rtol=1e-4, atol=1e-9)
    assert by_dimension[Dimension.HEADS].report["criterion"] == "Var(X) * ||W_col||^2 (FLAP)"


def test_units_that_write_nothing_score_zero_and_scoring_leaves_the_model_alone(corpus):
    model = tiny_model("llama")
    architecture = get_plugins().hooks([]).architecture_for(model)
    with torch.no_grad():
        architecture.layers(model)[1].mlp.down_proj.weight[:, [5, 9]] = 0
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    _, [importance] = score(model, corpus)
    assert importance.scores[1][[5, 9]].eq(0).all() and importance.scores[1].gt(0).sum() == 126
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert not any(module._forward_pre_hooks for module in model.modules())


@pytest.fixture
def probe(logits_probe):
    return logits_probe(IDS)


def test_a_run_writes_a_stock_checkpoint_that_from_pretrained_loads(corpus, tmp_path, probe):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--model", "tiny-llama", "--plugins", "activation,probe", "--ratio", "0.5", "--output", str(out),
        "-o", f"activation.source={corpus}", "-o", "activation.count=4", "-o", "activation.length=32",
        "-o", "activation.dimensions=[ffn, heads]", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["stock"] is True
    assert report["pruning"]["ffn"]["calibration"]["tokens"] == 128
    assert f"- ffn pruning, calibration: {corpus}, 128 tokens; " in (out / "report.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert (model.config.intermediate_size, model.config.num_key_value_heads, model.config.num_attention_heads) == (64, 1, 2)
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, probe.logits["after"], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("family", "options", "message"),
    [
        ("tiny-opt", ["-o", "activation.dimensions=[heads]"], "activation cannot score heads of opt models"),
        ("tiny-llama", ["-o", "activation.source=/no/such/file.txt"], "data file not found: /no/such/file.txt"),
        ("tiny-llama", ["-o", "activation.metric=median"], "options.activation.metric"),
    ],
)
def test_bad_input_is_a_one_line_error(family, options, message, tmp_path, probe):
    result = CliRunner().invoke(app, ["run", "--model", family, "--plugins", "activation,probe", "--ratio", "0.5",
                                      "--output", str(tmp_path / "run"), *options])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "run" / "model").exists()


# --- the real model ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_activation_beats_random_at_equal_size(tmp_path, monkeypatch, shared_data):
    """On SmolLM2-135M, keeping the channels that write the most beats keeping random ones."""
    from prunekit.plugins import data
    from prunekit.models import load_model
    from prunekit.plugins import random_pruner
    from prunekit.plugins.models import smollm2
    from prunekit.slicing import keep_plan

    monkeypatch.delenv("PRUNEKIT_CACHE")
    checkpoint = smollm2.checkpoint_dir()
    (tmp_path / "real-cache").mkdir()
    (tmp_path / "real-cache" / checkpoint.name).symlink_to(checkpoint)
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "real-cache"))
    loaded = load_model(smollm2.NAME, dtype="float32", device="cpu")
    wikitext = shared_data / "wikitext2.test.raw"
    windows = data.windows(data.token_stream(loaded.tokenizer, f"{wikitext}[:50%]"), 512, count=2)
    architecture = get_plugins().hooks([]).architecture_for(loaded.model)
    config = get_plugins().resolve_options(RunConfig(model="smollm2-135m", ratio=0.3, options={
        "activation": {"source": f"{wikitext}[50%:]", "count": 8, "length": 256}}))

    def perplexity_after(pruner) -> float:
        model = copy.deepcopy(loaded.model)
        importances = pruner.score_importance(ScoreRequest(model, architecture, config, tokenizer=loaded.tokenizer))
        for layer, keep in zip(architecture.layers(model), keep_plan(importances, 0.3, architecture, model)):
            architecture.slice(layer, Dimension.FFN, keep[Dimension.FFN])
        with torch.no_grad():
            losses = [model(w[None], labels=w[None], use_cache=False).loss for w in windows]
        return torch.stack(losses).mean().exp().item()

    assert perplexity_after(activation) < perplexity_after(random_pruner)
