"""What ``--model`` accepts: tiny built-ins, names a plugin provides, local checkpoints (stock or
per-layer), the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.plugins.report import card as modelcard
from prunekit.cli import app
from prunekit.errors import UsageError
from prunekit.models import fingerprint, load_model
from prunekit.payloads import ModelSource
from prunekit.plugins.models.tiny import FAMILIES, tiny_model, tokenizer

runner = CliRunner()


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_are_seeded_and_come_with_a_tokenizer(family):
    loaded = load_model(f"tiny-{family}", device="cpu")
    assert loaded.model.config.model_type == family and loaded.model.dtype == torch.float32
    assert fingerprint(loaded.model) == fingerprint(tiny_model(family))
    assert fingerprint(tiny_model(family, seed=1)) != fingerprint(tiny_model(family))
    ids = loaded.tokenizer("héllo", return_tensors="pt").input_ids
    assert loaded.tokenizer.decode(ids[0]) == "héllo" and ids.max() < loaded.model.config.vocab_size


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/no/such/dir", "model path does not exist: /no/such/dir"),
        ("./relative/dir", "model path does not exist"),
        ("tiny-nosuch", "no tiny model for family 'nosuch': not a causal-LM family of transformers"),
        ("not a hub id", "model path does not exist"),
    ],
)
def test_bad_model_names_are_usage_errors(name, message):
    with pytest.raises(UsageError, match=message):
        load_model(name)


def test_a_file_is_not_a_model_directory(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_text("")
    with pytest.raises(UsageError, match="model path is not a directory"):
        load_model(str(path))


def test_an_unreachable_hub_id_is_a_one_line_usage_error():
    with pytest.raises(UsageError, match="cannot load model 'nobody/no-such-model'") as info:
        load_model("nobody/no-such-model")
    assert "\n" not in str(info.value)


def test_cuda_without_a_gpu_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UsageError, match="no CUDA device"):
        load_model("tiny-llama", device="cuda")


def test_a_local_checkpoint_loads_with_its_storage_dtype_recorded(tmp_path):
    tiny_model("qwen2").to(torch.bfloat16).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="auto", device="cpu")
    assert loaded.model.dtype == torch.float32 and loaded.storage_dtype == torch.bfloat16
    assert loaded.tokenizer is None  # no tokenizer files: a bare checkpoint still slices


def test_a_run_saves_in_the_source_dtype(tmp_path):
    source = tmp_path / "source"
    tiny_model("llama").to(torch.float16).save_pretrained(source)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--model", str(source), "--plugins", "random", "--ratio", "0.5",
                                 "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert AutoModelForCausalLM.from_pretrained(out / "model").dtype == torch.float16


def test_per_layer_checkpoints_load_through_model_names(tmp_path):
    """``core eval --model DIR`` must accept what a per-layer pruner saved."""
    from prunekit.manager import get_plugins
    from prunekit.payloads import Dimension

    model = tiny_model("llama")
    arch = get_plugins().hooks([]).architecture_for(model)
    for layer, count in zip(arch.layers(model), (96, 32)):
        arch.slice(layer, Dimension.FFN, torch.arange(count))
    assert arch.sync_config(model) is False
    model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert [arch.units(layer, Dimension.FFN) for layer in arch.layers(loaded.model)] == [96, 32]


class Acme:
    """A third-party plugin that adds two model names: a checkpoint made on first use, and a model
    built in memory from a seed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made = 0

    def checkpoint(self) -> Path:
        self.made += 1
        if not (self.directory / "config.json").is_file():
            tiny_model("qwen2", seed=7).to(torch.bfloat16).save_pretrained(self.directory)
        return self.directory

    @hookimpl
    def model_source(self, name):
        if name == "acme-small":
            return ModelSource(checkpoint=self.checkpoint, base_model="acme/small", license="mit")
        if name == "acme-random":
            return ModelSource(build=lambda seed: tiny_model("gpt2", seed), tokenizer=tokenizer)
        return None


def test_a_plugin_provides_model_names_that_load_and_that_the_card_names(register_plugin, prunekit_plugins, tmp_path):
    assert prunekit_plugins.model_source("acme-small") is None  # a Hub id, until a plugin provides it
    acme = Acme(tmp_path / "acme")
    register_plugin(acme, "acme")
    assert modelcard.base_model("acme-small") == "acme/small" and modelcard._license("acme-small") == "mit"
    assert acme.made == 0  # naming the model in a card makes no checkpoint
    loaded = load_model("acme-small", device="cpu")
    assert acme.made == 1 and loaded.model.config.model_type == "qwen2"
    assert loaded.model.dtype == torch.float32 and loaded.storage_dtype == torch.bfloat16
    built = load_model("acme-random", device="cpu")
    assert fingerprint(built.model) == fingerprint(tiny_model("gpt2")) and built.storage_dtype == torch.float32
    assert built.tokenizer.decode(built.tokenizer("abc").input_ids) == "abc"
    assert modelcard.base_model("acme-random") is None
    assert load_model("tiny-opt", device="cpu").model.config.model_type == "opt"  # the built-in names still answer


def test_a_model_source_gives_a_checkpoint_or_a_build():
    with pytest.raises(TypeError, match="either checkpoint or build"):
        ModelSource()
    with pytest.raises(TypeError, match="either checkpoint or build"):
        ModelSource(checkpoint=Path, build=tiny_model)


def test_the_tiny_model_fixture_builds_the_model_its_name_loads_with_the_seed_given(request):
    fixture = request.getfixturevalue("tiny_model")
    assert fingerprint(fixture("opt")) == fingerprint(load_model("tiny-opt", device="cpu").model)
    assert fingerprint(fixture("opt", seed=3)) == fingerprint(tiny_model("opt", seed=3))
    with pytest.raises(UsageError, match="no tiny model for family 'nosuch'"):
        fixture("nosuch")


@pytest.mark.slow
def test_the_real_model_compresses_by_30_percent_of_its_ffn_into_a_stock_checkpoint(tmp_path):
    out = tmp_path / "random-30"
    result = runner.invoke(app, ["run", "--model", "smollm2-135m", "--plugins", "random", "--ratio", "0.3",
                                 "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    kept = int(0.7 * 1536)
    assert kept == 1075
    removed_per_layer = (1536 - kept) * 3 * 576  # gate and up rows, down columns; no biases
    assert report["params"]["before"] == 134_515_008
    assert report["params"]["after"] == 134_515_008 - 30 * removed_per_layer
    saved = AutoModelForCausalLM.from_pretrained(out / "model")
    assert saved.config.intermediate_size == 1075 and saved.dtype == torch.float16
    assert sum(p.numel() for p in saved.parameters()) == report["params"]["after"]
    # the slicer adds at most a few layers' worth of new weights to the process's memory
    slice_memory = report["memory"]["slice"]
    assert slice_memory["peak_mb"] - slice_memory["start_mb"] < 3 * 1536 * 576 * 4 * 3 / 2**20
