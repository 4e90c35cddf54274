"""Structural slicing is exact: a sliced model computes what the original computes with the removed
units zeroed, saves as a stock checkpoint, and has exactly the parameters the arithmetic predicts."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.architectures import LAYER_UNITS_KEY
from prunekit.plugins.surgery import zero_removed_units
from prunekit.loading import needs_prunekit
from prunekit.manager import get_plugins
from prunekit.payloads import Dimension, Importance
from prunekit.plugins.models.tiny import FAMILIES, tiny_model
from prunekit.slicing import keep_plan, kept_units

TOLERANCE = 1e-4  # max abs logit difference in float32
IDS = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))


def adapter(model):
    return get_plugins().hooks([]).architecture_for(model)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def random_keep(units: int, count: int, seed: int) -> torch.Tensor:
    return torch.sort(torch.randperm(units, generator=torch.Generator().manual_seed(seed))[:count]).values


def zero_removed(model, arch, dimension: Dimension, keeps: list[torch.Tensor]):
    """The original model with the removed units' contributions zeroed (their output-projection inputs)."""
    zeroed = copy.deepcopy(model)
    for layer, keep in zip(arch.layers(zeroed), keeps):
        zero_removed_units(arch, layer, dimension, keep)
    return zeroed


def slice_model(model, arch, dimension: Dimension, keeps: list[torch.Tensor]) -> bool:
    for layer, keep in zip(arch.layers(model), keeps):
        arch.slice(layer, dimension, keep)
    return arch.sync_config(model)


def sliceable(family: str) -> list[Dimension]:
    """The dimensions sliced within a layer (depth drops whole layers instead)."""
    dims = adapter(tiny_model(family)).dimensions - {Dimension.LAYERS}
    return sorted(dims, key=lambda d: d.value)


CASES = [(family, dim) for family in FAMILIES for dim in sliceable(family)]


@pytest.mark.parametrize("family", FAMILIES)
def test_keeping_every_unit_leaves_logits_identical(family):
    model = tiny_model(family)
    arch = adapter(model)
    before = logits(model)
    for dimension in sliceable(family):
        units = [arch.units(layer, dimension) for layer in arch.layers(model)]
        assert slice_model(model, arch, dimension, [torch.arange(n) for n in units])
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0)


@pytest.mark.parametrize(("family", "dimension"), CASES)
def test_sliced_model_equals_the_original_with_removed_units_zeroed(family, dimension, tmp_path):
    model = tiny_model(family)
    arch = adapter(model)
    units = arch.units(arch.layers(model)[0], dimension)
    keeps = [random_keep(units, kept_units(units, 0.5), seed) for seed in range(len(arch.layers(model)))]
    expected = logits(zero_removed(model, arch, dimension, keeps))
    params_before = sum(p.numel() for p in model.parameters())

    assert slice_model(model, arch, dimension, keeps) is True
    assert (logits(model) - expected).abs().max() < TOLERANCE

    # parameter arithmetic: every removed unit takes its rows, columns and biases with it
    removed = units - kept_units(units, 0.5)
    layer = arch.layers(tiny_model(family))[0]
    if dimension is Dimension.FFN:
        per_unit = sum(m.weight.numel() // arch.units(layer, dimension) + (m.bias is not None)
                       for m in (layer.get_submodule(p) for p in arch.ffn_inputs))
        per_unit += arch.output_projection(layer, dimension).weight.numel() // units
    else:
        _, per_group, head_dim = arch.head_shape(layer)
        hidden = model.config.hidden_size
        attn = arch.attention
        q, k, v = (layer.get_submodule(p) for p in (attn.q, attn.k, attn.v))
        per_unit = (per_group + 2) * head_dim * hidden + per_group * head_dim * hidden  # q, k, v rows + o columns
        per_unit += sum(head_dim * n for m, n in ((q, per_group), (k, 1), (v, 1)) if m.bias is not None)
    assert sum(p.numel() for p in model.parameters()) == params_before - len(keeps) * removed * per_unit

    model.save_pretrained(tmp_path)
    assert not needs_prunekit(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=0)
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_heads_are_sliced_as_whole_kv_groups_with_their_query_heads():
    model = tiny_model("llama")  # 4 query heads in 2 KV groups
    arch = adapter(model)
    slice_model(model, arch, Dimension.HEADS, [torch.tensor([1])] * 2)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim) == (2, 1, 16)
    attn = arch.layers(model)[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (32, 16, 32)


def test_families_without_a_configurable_head_width_offer_only_ffn_and_depth():
    for family in ("opt", "gpt_neox", "gpt2"):
        assert adapter(tiny_model(family)).dimensions == {Dimension.FFN, Dimension.LAYERS}


def test_gpt2_conv1d_weights_are_sliced_along_the_right_axis():
    model = tiny_model("gpt2")
    arch = adapter(model)
    mlp = arch.layers(model)[0].mlp
    expected_rows = mlp.c_fc.weight.T[[3, 7]]
    arch.slice(arch.layers(model)[0], Dimension.FFN, torch.tensor([3, 7]))
    assert mlp.c_fc.weight.shape == (64, 2) and mlp.c_proj.weight.shape == (2, 64)
    torch.testing.assert_close(arch.ffn_input_weight(arch.layers(model)[0]), expected_rows)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_per_layer_counts_are_not_stock_and_reload_with_prunekit_load(family, tmp_path):
    model = tiny_model(family)
    arch = adapter(model)
    assert slice_model(model, arch, Dimension.FFN, [torch.arange(100), torch.arange(0, 128, 2)]) is False
    assert getattr(model.config, LAYER_UNITS_KEY) == {"ffn": [100, 64]}
    model.save_pretrained(tmp_path)
    assert needs_prunekit(tmp_path)
    with pytest.raises(Exception):  # stock transformers cannot express per-layer sizes
        AutoModelForCausalLM.from_pretrained(tmp_path)
    reloaded = prunekit.load(tmp_path)
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt2"])
def test_dropping_layers_rewrites_the_config_and_reloads(family, tmp_path):
    model = tiny_model(family)
    arch = adapter(model)
    arch.drop_layers(model, [1])
    assert model.config.num_hidden_layers == 1 and len(arch.layers(model)) == 1
    out = model.generate(IDS[:1, :4], max_new_tokens=3, do_sample=False)  # the KV cache finds layer 0
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=0)
    assert torch.equal(reloaded.generate(IDS[:1, :4], max_new_tokens=3, do_sample=False), out)


def test_keep_plan_keeps_the_top_scores_per_layer_sorted():
    model = tiny_model("llama")
    arch = adapter(model)
    scores = [torch.arange(128.0), -torch.arange(128.0)]
    plan = keep_plan([Importance(Dimension.FFN, scores)], 0.75, arch, model)
    assert torch.equal(plan[0][Dimension.FFN], torch.arange(96, 128))
    assert torch.equal(plan[1][Dimension.FFN], torch.arange(32))


@pytest.mark.parametrize(
    ("scores", "keep_counts", "message"),
    [
        ([torch.rand(128)], None, "scores cover 1 layers, the model has 2"),
        ([torch.rand(128), torch.rand(64)], None, "layer 1: 64 ffn scores for 128 units"),
        ([torch.rand(128), torch.full((128,), float("nan"))], None, "layer 1: ffn scores contain NaN"),
        ([torch.rand(128)] * 2, [0, 10], "layer 0: cannot keep 0 of 128"),
    ],
)
def test_keep_plan_rejects_a_pruners_malformed_scores(scores, keep_counts, message):
    model = tiny_model("llama")
    with pytest.raises(RuntimeError, match=message):
        keep_plan([Importance(Dimension.FFN, scores, keep_counts)], 0.5, adapter(model), model)


def test_kept_units_follows_the_papers_floor_and_keeps_at_least_one():
    assert kept_units(1536, 0.3) == 1075
    assert kept_units(3, 0.9) == 1
