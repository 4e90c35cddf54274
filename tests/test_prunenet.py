"""PruneNet: the KS reward, the policy, REINFORCE training, policy reuse across ratios, and its errors.

Tiny models keep these fast (a policy over 2 layers trains in well under a second); the real
model runs in the one ``slow`` test at the end. Every test gets its own ``$PRUNEKIT_CACHE`` so
cached policies never leak between tests.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.manager import get_plugins
from prunekit.payloads import ScoreRequest
from prunekit.plugins import prunenet
from prunekit.plugins.models import smollm2
from prunekit.plugins.models.tiny import FAMILIES, FFN, HIDDEN, tiny_model
from prunekit.plugins.prunenet import scoring, store
from prunekit.plugins.prunenet.policy import KeepPolicy, autocast, draw_ranks, noisy_logits, sample_keep
from prunekit.plugins.prunenet.reward import REWARD_CAP, ks_statistic, reward, spectrum
from prunekit.plugins.prunenet.settings import PruneNetOptions
from prunekit.plugins.prunenet.training import train
from prunekit.slicing import kept_units

FEW = ["-o", "prunenet.episodes=3"]
PLUGINS = "prunenet,unmeasured"


class Unmeasured:
    """An evaluator that measures nothing: naming it keeps the default evaluators (perplexity,
    latency) out of these runs, which test pruning, not measurement."""

    @hookimpl
    def evaluate(self, request):
        return None


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch, register_plugin):
    register_plugin(Unmeasured(), "unmeasured")
    root = tmp_path / "cache"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(root))
    return root


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def run(model: str, ratio: float, output, *extra: str) -> dict:
    result = invoke("run", "--model", model, "--plugins", PLUGINS, "--ratio", str(ratio),
                    "--output", str(output), "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def score(model, ratio: float = 0.3, **options) -> list[torch.Tensor]:
    plugins = get_plugins()
    config = plugins.resolve_options(
        RunConfig(model="tiny", plugins=["prunenet"], ratio=ratio, options={"prunenet": options})
    )
    architecture = plugins.hooks(["prunenet"]).architecture_for(model)
    [importance] = prunenet.score_importance(ScoreRequest(model, architecture, config))
    return importance.scores


def slice_reward(weight: torch.Tensor, keep: list[int]) -> float:
    return reward(ks_statistic(spectrum(weight), spectrum(weight[keep])))


# --- reward --------------------------------------------------------------------------------


def test_reward_matches_a_hand_computed_ks_statistic():
    # rows along the axes: W^T W = diag(3^2 + 4^2, 5^2 + 12^2), singular values {5, 13};
    # keeping rows 0 and 2 leaves {3, 5}. ECDFs at 3, 5, 13: original 0, 1/2, 1; sliced 1/2, 1, 1.
    weight = torch.tensor([[3.0, 0.0], [4.0, 0.0], [0.0, 5.0], [0.0, 12.0]])
    assert ks_statistic(spectrum(weight), spectrum(weight[[0, 2]])) == pytest.approx(0.5)
    assert slice_reward(weight, [0, 2]) == pytest.approx(2.0)


def test_reward_with_fewer_rows_than_columns():
    # singular values {1, 2, 5}; rows 0 and 3 leave a 2 x 3 matrix with {1, 4}. ECDFs at 1, 2, 4, 5:
    # original 1/3, 2/3, 2/3, 1; sliced 1/2, 1/2, 1, 1; the largest gap is 1/3 (at 4).
    weight = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 4.0]])
    assert spectrum(weight[[0, 3]]).tolist() == pytest.approx([1.0, 4.0])
    assert ks_statistic(spectrum(weight), spectrum(weight[[0, 3]])) == pytest.approx(1 / 3)
    assert slice_reward(weight, [0, 3]) == pytest.approx(3.0)


def test_identical_spectra_earn_the_cap_not_infinity():
    weight = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert slice_reward(weight, list(range(8))) == REWARD_CAP


@pytest.mark.parametrize("shape", [(96, 40), (30, 40)])
def test_spectrum_equals_the_singular_values(shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    expected = torch.linalg.svdvals(weight.double()).flip(0)
    assert torch.allclose(spectrum(weight), expected, atol=1e-10)


# --- policy --------------------------------------------------------------------------------


def test_policy_is_sigmoid_of_linear_then_v_with_one_score_per_row():
    policy = KeepPolicy(hidden=HIDDEN, width=FFN, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(FFN, HIDDEN, generator=torch.Generator().manual_seed(1))
    assert policy.A.weight.shape == (FFN, HIDDEN) and policy.v.shape == (FFN,)
    logits = policy.logits(weight)
    assert logits.shape == (FFN,)
    with torch.no_grad():  # the paper's form, A(W) @ v, computed left to right
        assert torch.allclose(logits, policy.A(weight) @ policy.v, atol=1e-5)
    # a layer with fewer channels (a model sliced before) gets one score per row all the same
    assert policy.logits(weight[:50]).shape == (50,)


def test_gradient_reaches_every_policy_parameter():
    policy = KeepPolicy(hidden=HIDDEN, width=FFN, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(FFN, HIDDEN, generator=torch.Generator().manual_seed(1))
    action, log_probs = sample_keep(policy.logits(weight), 89, torch.Generator().manual_seed(2))
    (-log_probs[action].sum() * 1.5).backward()
    for name, parameter in policy.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


def test_sampling_draws_distinct_channels_even_from_saturated_scores():
    generator = torch.Generator().manual_seed(0)
    logits = torch.full((128,), -1e4)
    logits[:10] = 1e4  # sigmoid underflows to exactly 0 for the other 118
    action, log_probs = sample_keep(logits, 100, generator)
    assert len(set(action.tolist())) == 100 and action.max() < 128
    assert set(range(10)) <= set(action.tolist())
    assert torch.isfinite(log_probs).all()


def test_sampling_refuses_non_finite_scores():
    logits = torch.zeros(16)
    logits[3] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        sample_keep(logits, 4, torch.Generator().manual_seed(0))


# --- training ------------------------------------------------------------------------------


def weights_of(model) -> list[torch.Tensor]:
    return [layer.mlp.gate_proj.weight.detach().float() for layer in model.model.layers]


def test_training_is_deterministic_under_a_seed():
    weights = weights_of(tiny_model("llama"))
    options = PruneNetOptions(episodes=3)
    first, second = (train(weights, [89, 89], options, seed=7) for _ in range(2))
    other = train(weights, [89, 89], options, seed=8)
    assert first.learning_curve == second.learning_curve
    for name, value in first.policy.state_dict().items():
        assert torch.equal(value, second.policy.state_dict()[name]), name
    assert not torch.equal(first.policy.v, other.policy.v)


def test_training_records_a_curve_and_keeps_the_best_episode():
    trained = train(weights_of(tiny_model("llama")), [64, 64], PruneNetOptions(episodes=4), seed=0)
    assert len(trained.learning_curve) == 4
    assert trained.learning_curve[trained.best_episode] == max(trained.learning_curve)


@pytest.mark.parametrize(("update", "steps"), [("episode", 2), ("layer", 4)])
def test_gradients_are_clipped_after_backward_not_after_zero_grad(monkeypatch, update, steps):
    """The public code clipped right after ``zero_grad``, a no-op; here clipping sees real
    gradients: one step per episode (the authors' package) or per layer (their scripts)."""
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        total = clip(parameters, max_norm, *args, **kwargs)
        norms.append(float(total))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    trained = train(weights_of(tiny_model("llama")), [89, 89],
                    PruneNetOptions(episodes=2, update=update, precision="full"), seed=0)
    assert len(norms) == steps and all(0 < norm < float("inf") for norm in norms)
    assert trained.steps == {"taken": steps, "skipped": 0}


def test_mixed_precision_skips_the_steps_whose_float16_gradients_overflow():
    """The authors' GradScaler starts at a scale of 65536; the REINFORCE loss (hundreds of
    channels times a reward near 1 / KS) overflows float16 at that scale, and the scaler skips
    the step and halves the scale, as in their code."""
    weights = weights_of(tiny_model("llama"))
    mixed = train(weights, [89, 89], PruneNetOptions(episodes=3), seed=0)
    assert mixed.steps["skipped"] >= 1 and sum(mixed.steps.values()) == 3
    full = train(weights, [89, 89], PruneNetOptions(episodes=3, precision="full"), seed=0)
    assert full.steps == {"taken": 3, "skipped": 0}


def test_policy_initialization_matches_the_authors_distribution():
    """``A`` is ``nn.Linear``'s default (uniform within 1/sqrt(hidden)) and ``v`` is ``torch.rand``,
    uniform on (0, 1): not a small symmetric range."""
    from scipy.stats import kstest

    hidden, width = 576, 1536
    policy = KeepPolicy(hidden=hidden, width=width, generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(hidden)
    assert kstest(policy.v.detach().numpy(), "uniform", args=(0, 1)).pvalue > 1e-3
    assert kstest(policy.A.weight.detach().flatten()[:20000].numpy(), "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3
    assert kstest(policy.A.bias.detach().numpy(), "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3
    # the same generator stream as the authors' module, nn.Linear then torch.rand, for one seed
    torch.manual_seed(3)
    linear, v = torch.nn.Linear(hidden, width), torch.rand(width, 1)
    mine = KeepPolicy(hidden=hidden, width=width, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mine.A.weight, linear.weight) and torch.equal(mine.A.bias, linear.bias)
    assert torch.equal(mine.v, v[:, 0])


def test_the_prune_time_draw_is_the_authors_multinomial_draw():
    """The core's top-k of the draw's ranks is ``torch.multinomial(p, k, replacement=False)`` on
    the noisy keep-probabilities, for every k, under one generator state."""
    logits = torch.randn(FFN, generator=torch.Generator().manual_seed(5)) * 3
    ranks = draw_ranks(logits, torch.Generator().manual_seed(9))
    for keep in (1, 40, 89, FFN):
        generator = torch.Generator().manual_seed(9)
        noisy = noisy_logits(logits, generator)
        drawn = torch.multinomial(torch.sigmoid(noisy), keep, replacement=False, generator=generator)
        assert set(drawn.tolist()) == set(ranks.topk(keep).indices.tolist())


def test_the_prune_time_draw_is_deterministic_for_a_seed_and_recorded():
    model = tiny_model("llama")
    first, again = score(model, episodes=2), score(model, episodes=2)
    other = score(model, episodes=2, draw_seed=11)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_top_k_selection_scores_by_the_noise_free_logits(cache):
    model = tiny_model("llama")
    scores = score(model, episodes=2, selection="topk")
    [path] = (cache / "policies").glob("*/*.safetensors")  # the policy both selections share
    policy = store.load(path, HIDDEN).policy
    with torch.no_grad(), autocast("mixed", "cpu"):
        logits = [policy.logits(weight).float() for weight in weights_of(model)]
    assert all(torch.equal(a, b) for a, b in zip(scores, logits))
    drawn = score(model, episodes=2)
    assert not all(torch.equal(a, b) for a, b in zip(scores, drawn))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gets_one_finite_score_per_channel(family):
    model = tiny_model(family)
    scores = score(model, episodes=2)
    assert len(scores) == 2
    assert all(s.shape == (FFN,) and torch.isfinite(s).all() for s in scores)


# --- runs, reuse and reloading -------------------------------------------------------------


def test_run_reports_the_learning_curve_and_reloads_with_stock_transformers(tmp_path):
    report = run("tiny-llama", 0.3, tmp_path / "run", *FEW)
    ffn = report["pruning"]["ffn"]
    assert len(ffn["learning_curve"]) == 3 and ffn["policy"]["source"] == "trained"
    assert ffn["settings"]["episodes"] == 3 and ffn["policy"]["train_ratio"] == 0.3
    assert 0 <= ffn["ks_statistic"]["mean"] <= 1
    assert ffn["selection"].startswith("drawn") and ffn["settings"]["draw_seed"] == 0  # the run's --seed
    assert sum(ffn["optimizer_steps"].values()) == 3

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    kept = kept_units(FFN, 0.3)
    assert reloaded.config.intermediate_size == kept
    original = tiny_model("llama")
    scores = score(original, episodes=3)  # the cached policy, so the same scores
    for layer, before, layer_scores in zip(reloaded.model.layers, original.model.layers, scores):
        keep = torch.sort(torch.sort(layer_scores, descending=True, stable=True).indices[:kept]).values
        assert torch.equal(layer.mlp.gate_proj.weight, before.mlp.gate_proj.weight[keep])
        assert torch.equal(layer.mlp.down_proj.weight, before.mlp.down_proj.weight[:, keep])


def test_a_second_ratio_reuses_the_policy_without_training(tmp_path, monkeypatch, cache):
    first = run("tiny-llama", 0.3, tmp_path / "r30", *FEW)["pruning"]["ffn"]
    assert first["policy"]["source"] == "trained"
    assert len(list((cache / "policies").glob("*/*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the policy was retrained")

    monkeypatch.setattr(scoring, "train", no_training)
    second = run("tiny-llama", 0.5, tmp_path / "r50", *FEW)["pruning"]["ffn"]
    assert second["policy"]["source"] == "cache"
    assert second["policy"]["path"] == first["policy"]["path"]
    assert second["learning_curve"] == first["learning_curve"]
    assert second["policy"]["train_ratio"] == 0.3


def test_one_policy_gives_nested_channel_sets_across_ratios():
    model = tiny_model("llama")
    low, high = score(model, 0.3, episodes=2), score(model, 0.5, episodes=2)
    for a, b in zip(low, high):
        assert torch.equal(a, b)
        keep30 = set(a.topk(kept_units(FFN, 0.3)).indices.tolist())
        keep50 = set(a.topk(kept_units(FFN, 0.5)).indices.tolist())
        assert keep50 < keep30


def test_changed_training_settings_train_a_new_policy(tmp_path, cache):
    run("tiny-llama", 0.3, tmp_path / "a", *FEW)
    report = run("tiny-llama", 0.3, tmp_path / "b", "-o", "prunenet.episodes=2")
    assert report["pruning"]["ffn"]["policy"]["source"] == "trained"
    assert len(list((cache / "policies").glob("*/*.safetensors"))) == 2


def test_explicit_policy_path_is_loaded(tmp_path, monkeypatch, cache):
    first = run("tiny-llama", 0.3, tmp_path / "a", *FEW)["pruning"]["ffn"]
    source = Path(first["policy"]["path"])
    target = tmp_path / "mine.safetensors"
    shutil.copy(source, target)
    shutil.copy(source.with_suffix(".json"), target.with_suffix(".json"))
    shutil.rmtree(cache / "policies")
    monkeypatch.setattr(scoring, "train", lambda *a, **k: pytest.fail("the policy was retrained"))
    second = run("tiny-llama", 0.5, tmp_path / "b", "-o", f"prunenet.policy={target}")["pruning"]["ffn"]
    assert second["policy"]["source"] == "file" and second["policy"]["path"] == str(target)
    assert second["learning_curve"] == first["learning_curve"]


def test_cache_off_trains_and_stores_nothing(tmp_path, cache):
    report = run("tiny-llama", 0.3, tmp_path / "a", *FEW, "-o", "prunenet.cache=false")
    assert report["pruning"]["ffn"]["policy"]["path"] is None
    assert not (cache / "policies").exists()


# --- bad input: one line, exit code 2 --------------------------------------------------------


def fails(*args: str) -> str:
    result = invoke("run", "--plugins", PLUGINS, "--ratio", "0.3", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_nan_in_ffn_weights_is_a_clear_error(tmp_path):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.gate_proj.weight[5, 3] = float("nan")
    model.save_pretrained(tmp_path / "nan-model")
    message = fails("--model", str(tmp_path / "nan-model"), "--output", str(tmp_path / "run"))
    assert "model.layers.1.mlp.gate_proj.weight holds non-finite values (NaN or Inf)" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("prunenet.episodes=0", "options.prunenet.episodes"),
        ("prunenet.discount=1.5", "options.prunenet.discount"),
        ("prunenet.learning_rate=-1", "options.prunenet.learning_rate"),
        ("prunenet.train_ratio=1", "options.prunenet.train_ratio"),
        ("prunenet.episode=3", "options.prunenet.episode"),
        ("prunenet.selection=best", "options.prunenet.selection"),
        ("prunenet.precision=half", "options.prunenet.precision"),
        ("prunenet.update=step", "options.prunenet.update"),
    ],
)
def test_invalid_settings_are_rejected(tmp_path, option, expected):
    assert expected in fails("--model", "tiny-llama", "--output", str(tmp_path / "run"), "-o", option)


def test_missing_policy_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "none.safetensors"
    message = fails("--model", "tiny-llama", "--output", str(tmp_path / "r"), "-o", f"prunenet.policy={missing}")
    assert "policy not found" in message


def test_policy_without_settings_file_is_a_clear_error(tmp_path):
    path = tmp_path / "p.safetensors"
    save_file({"v": torch.zeros(3)}, path)
    message = fails("--model", "tiny-llama", "--output", str(tmp_path / "r"), "-o", f"prunenet.policy={path}")
    assert "no settings file p.json" in message


def test_policy_for_another_hidden_size_is_a_clear_error(tmp_path):
    path = tmp_path / "wide.safetensors"
    store.save(KeepPolicy(hidden=32, width=FFN), {"hidden": 32, "width": FFN}, path)
    message = fails("--model", "tiny-llama", "--output", str(tmp_path / "r"), "-o", f"prunenet.policy={path}")
    assert "hidden size 32" in message and f"is {HIDDEN}" in message


def test_corrupt_policy_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    path.with_suffix(".json").write_text(json.dumps({"format": store.FORMAT, "hidden": HIDDEN, "width": FFN}))
    message = fails("--model", "tiny-llama", "--output", str(tmp_path / "r"), "-o", f"prunenet.policy={path}")
    assert "cannot read PruneNet policy" in message


def test_policy_of_wrong_file_type_is_a_clear_error(tmp_path):
    path = tmp_path / "policy.pt"
    path.write_bytes(b"")
    message = fails("--model", "tiny-llama", "--output", str(tmp_path / "r"), "-o", f"prunenet.policy={path}")
    assert ".safetensors" in message


# --- the real model ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_trains_once_and_reuses_the_policy(tmp_path, monkeypatch, cache):
    monkeypatch.delenv("PRUNEKIT_CACHE")
    checkpoint = smollm2.checkpoint_dir()  # the shared converted checkpoint, not a second copy
    cache.mkdir(parents=True)
    (cache / checkpoint.name).symlink_to(checkpoint)
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))

    first = run("smollm2-135m", 0.3, tmp_path / "r30", "-o", "prunenet.episodes=2")
    ffn = first["pruning"]["ffn"]
    assert ffn["policy"]["source"] == "trained" and len(ffn["learning_curve"]) == 2
    assert first["params"]["after"] == first["params"]["before"] - 30 * 3 * 576 * (1536 - 1075)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "r30" / "model")
    assert reloaded.config.intermediate_size == 1075

    monkeypatch.setattr(scoring, "train", lambda *a, **k: pytest.fail("the policy was retrained"))
    second = run("smollm2-135m", 0.5, tmp_path / "r50", "-o", "prunenet.episodes=2")
    assert second["pruning"]["ffn"]["policy"]["source"] == "cache"
    assert second["params"]["after"] == first["params"]["before"] - 30 * 3 * 576 * (1536 - 768)
