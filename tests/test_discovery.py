"""The derived adapter: a family no table knows is sliced exactly, and what it cannot place it
refuses with the reason (the coverage test runs this over every family transformers maps)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from prunekit import hookimpl
from prunekit.plugins.surgery import zero_removed_units
from prunekit.errors import UsageError
from prunekit.manager import Plugins, get_plugins
from prunekit.payloads import Dimension

IDS = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))


class HomebrewConfig(LlamaConfig):
    model_type = "prunekit_homebrew"


class HomebrewForCausalLM(LlamaForCausalLM):
    """A family of its own, in no table of prunekit's or transformers' own mapping: only the
    registration below tells AutoModelForCausalLM about it, as a user's custom model would."""

    config_class = HomebrewConfig


@pytest.fixture(scope="module")
def homebrew():
    AutoConfig.register(HomebrewConfig.model_type, HomebrewConfig, exist_ok=True)
    AutoModelForCausalLM.register(HomebrewConfig, HomebrewForCausalLM, exist_ok=True)
    torch.manual_seed(0)
    config = HomebrewConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, vocab_size=257)
    return HomebrewForCausalLM(config).eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("dimension", [Dimension.FFN, Dimension.HEADS])
def test_a_family_in_no_table_is_sliced_exactly_and_reloads_stock(homebrew, dimension, tmp_path):
    architecture = get_plugins().hooks([]).architecture_for(homebrew)
    assert architecture.family == "prunekit_homebrew" and dimension in architecture.dimensions
    sliced, zeroed = copy.deepcopy(homebrew), copy.deepcopy(homebrew)
    keeps = []
    for layer in architecture.layers(sliced):
        units = architecture.units(layer, dimension)
        keeps.append(torch.sort(torch.randperm(units, generator=torch.Generator().manual_seed(1))[: units // 2]).values)
        architecture.slice(layer, dimension, keeps[-1])
    for layer, keep in zip(architecture.layers(zeroed), keeps):
        zero_removed_units(architecture, layer, dimension, keep)
    assert architecture.sync_config(sliced)
    assert (logits(sliced) - logits(zeroed)).abs().max() < 1e-4
    sliced.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded) is HomebrewForCausalLM
    assert torch.equal(logits(reloaded), logits(sliced))


def test_a_norm_inside_the_mlp_fails_the_replay_and_ffn_is_refused_with_the_reason(homebrew):
    """Structure says gate/up/down; what the layer computes says otherwise, and the replay finds it."""

    class NormedMLP(nn.Module):
        def __init__(self, mlp):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
            self.act_fn = mlp.act_fn

        def forward(self, x):  # normalises over the channels: removing some changes the others
            inner = self.act_fn(self.gate_proj(x)) * self.up_proj(x)
            return self.down_proj(inner / inner.norm(dim=-1, keepdim=True))

    model = copy.deepcopy(homebrew)
    for layer in model.model.layers:
        layer.mlp = NormedMLP(layer.mlp)
    architecture = get_plugins().hooks([]).architecture_for(model)
    assert Dimension.FFN not in architecture.dimensions
    assert "slicing ffn does not equal zeroing it" in architecture.reasons[Dimension.FFN]
    assert Dimension.HEADS in architecture.dimensions  # the attention is untouched and still offered


def test_one_kv_group_offers_no_heads_and_says_why():
    """Gemma 3 270M has one KV group: no heads ratio could remove anything, so none is accepted."""
    config = HomebrewConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=16, vocab_size=257)
    architecture = get_plugins().hooks([]).architecture_for(HomebrewForCausalLM(config).eval())
    assert Dimension.HEADS not in architecture.dimensions and Dimension.FFN in architecture.dimensions
    with pytest.raises(UsageError, match="heads into a stock checkpoint: the attention has one KV group"):
        architecture.require(Dimension.HEADS)


class Deriving:
    """A plugin with a derivation of its own, which answers for every model."""

    def __init__(self, adapter):
        self.adapter, self.asked = adapter, 0

    @hookimpl
    def derive_architecture(self, model):
        self.asked += 1
        return self.adapter


def test_a_plugins_derivation_is_asked_before_discovery_and_once_per_model(homebrew, register_plugin):
    derived = get_plugins().hooks([]).architecture_for(homebrew)
    plugin = Deriving(derived)
    register_plugin(plugin, "deriving")
    model, hooks = copy.deepcopy(homebrew), get_plugins().hooks([])
    assert hooks.architecture_for(model) is derived and hooks.architecture_for(model) is derived
    assert plugin.asked == 1


def test_a_model_no_plugin_derives_is_refused_in_one_line(homebrew, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DISABLE_PLUGINS", "discovery")
    with pytest.raises(UsageError, match=r"^cannot slice 'prunekit_homebrew' models: no registered adapter "
                                         r"claims them and no installed plugin derives one$"):
        Plugins().hooks([]).architecture_for(copy.deepcopy(homebrew))
