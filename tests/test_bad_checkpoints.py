"""Bad checkpoints are bad input: exit 2 with one line naming the file or tensor, nothing written.

A directory without config.json, a truncated or corrupt safetensors file, a sharded checkpoint
missing a shard or holding a truncated one, NaN or Inf in any weight, an encoder-decoder family:
each is refused at load by ``core run`` and ``core eval`` alike, before a run directory exists.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, invoke

import prunekit
from prunekit.errors import UsageError
from prunekit.loading import INDEX, WEIGHTS, needs_prunekit
from prunekit.manager import get_plugins
from prunekit.models import first_non_finite, load_model
from prunekit.payloads import Dimension
from prunekit.plugins.models.tiny import FAMILIES, tiny_model

SHARD = "100KB"
"""A tiny llama (430 KB of float32) saved in shards of at most this size: five of them."""


def refused(model_dir: Path, tmp_path: Path, *fragments: str) -> None:
    """``run`` and ``eval`` of ``model_dir`` both stop with one line holding ``fragments``, and
    the run's --output directory is never created."""
    out = tmp_path / "run"
    result = invoke("run", "--model", str(model_dir), "--plugins", "random", "--ratio", "0.3", "--output", str(out))
    assert_one_line_error(result, *fragments)
    assert not out.exists()
    assert_one_line_error(invoke("eval", "--model", str(model_dir)), *fragments)


def saved(directory: Path, model=None, **options) -> Path:
    (model if model is not None else tiny_model("llama")).save_pretrained(directory, **options)
    return directory


def header_length(file: Path) -> int:
    return struct.unpack("<Q", file.read_bytes()[:8])[0]


def shards(directory: Path) -> list[Path]:
    files = sorted(set(json.loads((directory / INDEX).read_text())["weight_map"].values()))
    assert len(files) > 2, files
    return [directory / name for name in files]


def truncate(file: Path, size: int) -> None:
    file.write_bytes(file.read_bytes()[:size])


def test_a_directory_without_config_json(tmp_path):
    model_dir = saved(tmp_path / "model")
    (model_dir / "config.json").unlink()
    refused(model_dir, tmp_path, f"no config.json in {model_dir}")
    result = invoke("eval", "--model", str(model_dir))
    assert result.stderr.strip() == f"Error: no config.json in {model_dir}"


def test_safetensors_truncated_in_its_header(tmp_path):
    file = saved(tmp_path / "model") / WEIGHTS
    truncate(file, 8 + header_length(file) // 2)
    refused(file.parent, tmp_path, f"cannot read weights file {file}: it is truncated or corrupt")


def test_safetensors_truncated_in_its_data(tmp_path):
    """The header is whole and parses; only the file's size shows that tensors are cut off."""
    file = saved(tmp_path / "model") / WEIGHTS
    truncate(file, file.stat().st_size - 1000)
    assert file.stat().st_size > 8 + header_length(file)
    refused(file.parent, tmp_path, f"cannot read weights file {file}: it is truncated or corrupt")


@pytest.mark.parametrize("damage", ["json", "length", "garbage"])
def test_a_corrupt_safetensors_header(tmp_path, damage):
    file = saved(tmp_path / "model") / WEIGHTS
    data = file.read_bytes()
    if damage == "json":
        data = data[:8] + b"#" * 32 + data[40:]
    elif damage == "length":
        data = struct.pack("<Q", 10**12) + data[8:]
    else:
        data = bytes(range(256)) * 64
    file.write_bytes(data)
    refused(file.parent, tmp_path, f"cannot read weights file {file}: it is truncated or corrupt")


def test_a_missing_shard(tmp_path):
    model_dir = saved(tmp_path / "model", max_shard_size=SHARD)
    missing = shards(model_dir)[1]
    missing.unlink()
    refused(model_dir, tmp_path, f"weights file {missing} is missing ({INDEX} names it as a shard)")


def test_a_truncated_shard(tmp_path):
    model_dir = saved(tmp_path / "model", max_shard_size=SHARD)
    shard = shards(model_dir)[-1]
    truncate(shard, shard.stat().st_size - 100)
    refused(model_dir, tmp_path, f"cannot read weights file {shard}: it is truncated or corrupt")


def test_an_unreadable_shard_index(tmp_path):
    model_dir = saved(tmp_path / "model", max_shard_size=SHARD)
    (model_dir / INDEX).write_text('{"weight_map": ')
    refused(model_dir, tmp_path, f"cannot read the shard index {model_dir / INDEX}")


def test_nan_in_one_up_proj(tmp_path):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[7, 3] = float("nan")
    model_dir = saved(tmp_path / "model", model)
    refused(model_dir, tmp_path, f"model.layers.1.mlp.up_proj.weight holds non-finite values (NaN or Inf) in {model_dir}",
            "a pruned or evaluated model would be meaningless")


def test_inf_in_one_tensor(tmp_path):
    model = tiny_model("qwen2")
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.bias[2] = float("inf")
    refused(saved(tmp_path / "model", model), tmp_path, "model.layers.0.self_attn.q_proj.bias holds non-finite values")


def per_layer_model():
    """A tiny llama whose two layers keep 96 and 32 FFN channels: only prunekit.load reads it."""
    model = tiny_model("llama")
    arch = get_plugins().hooks([]).architecture_for(model)
    for layer, count in zip(arch.layers(model), (96, 32), strict=True):
        arch.slice(layer, Dimension.FFN, torch.arange(count))
    arch.sync_config(model)
    return model


def test_a_per_layer_checkpoint_with_a_truncated_file(tmp_path):
    model_dir = saved(tmp_path / "model", per_layer_model())
    assert needs_prunekit(model_dir)
    file = model_dir / WEIGHTS
    truncate(file, file.stat().st_size - 1000)
    refused(model_dir, tmp_path, f"cannot read weights file {file}: it is truncated or corrupt")
    with pytest.raises(UsageError, match="truncated or corrupt"):
        prunekit.load(model_dir)


def test_a_per_layer_checkpoint_with_a_missing_shard_or_nan(tmp_path):
    model = per_layer_model()
    sharded = saved(tmp_path / "sharded", model, max_shard_size=SHARD)
    assert needs_prunekit(sharded)
    prunekit.load(sharded)  # whole, it loads
    missing = shards(sharded)[0]
    missing.unlink()
    with pytest.raises(UsageError, match=f"weights file {missing} is missing"):
        prunekit.load(sharded)
    refused(sharded, tmp_path, f"weights file {missing} is missing")

    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("-inf")
    refused(saved(tmp_path / "nan", model), tmp_path, "model.layers.1.mlp.up_proj.weight holds non-finite values")


def test_an_encoder_decoder_checkpoint(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    model_dir = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=64,
                                        d_kv=16)).save_pretrained(model_dir)
    refused(model_dir, tmp_path, "'t5' is not a decoder model that AutoModelForCausalLM builds")


def test_a_cached_hub_model_with_a_truncated_file_names_it(tmp_path, monkeypatch):
    """A Hub id's files are found through the cache once safetensors fails on one of them."""
    import huggingface_hub.constants

    revision = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny"
    file = saved(repo / "snapshots" / revision) / WEIGHTS
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    truncate(file, file.stat().st_size - 1000)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = invoke("eval", "--model", "someone/tiny")
    assert_one_line_error(result, f"cannot read weights file {file}: it is truncated or corrupt")


@pytest.mark.parametrize("family", FAMILIES)
def test_good_models_are_finite(family):
    assert first_non_finite(load_model(f"tiny-{family}", device="cpu").model) is None


def test_the_finite_check_names_the_first_bad_tensor_and_survives_an_overflowing_sum():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.fill_(3e38)  # finite, though its sum is not
        assert first_non_finite(model) is None
        model.model.layers[0].mlp.down_proj.weight[1, 1] = float("nan")
        model.model.layers[1].mlp.down_proj.weight[1, 1] = float("nan")
    assert first_non_finite(model) == "model.layers.0.mlp.down_proj.weight"


def test_a_weight_that_overflows_the_requested_dtype_is_refused(tmp_path):
    """The check runs on the model as computed: 1e5 is finite in float32 and Inf in float16."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.gate_proj.weight[0, 0] = 1e5
    model_dir = saved(tmp_path / "model", model)
    assert load_model(str(model_dir), device="cpu").model is not None
    with pytest.raises(UsageError, match="model.layers.0.mlp.gate_proj.weight holds non-finite values"):
        load_model(str(model_dir), dtype="float16", device="cpu")
