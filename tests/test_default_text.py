"""The default text ships with prunekit: WikiText-2's test split, byte-exact, with its licence,
read by every text option's default from any directory and with no data folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prunekit.plugins import data
from prunekit.plugins import calibration
from prunekit.plugins.evaluators import perplexity
from prunekit.plugins.lora import corpus
from prunekit.plugins.models.tiny import tiny_model, tokenizer

SHA256 = "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"


def packaged() -> Path:
    return Path(data.default_text("").removesuffix(""))


def test_the_packaged_file_is_wikitext2_test_byte_exact_with_its_attribution_and_licence():
    text = packaged()
    assert hashlib.sha256(text.read_bytes()).hexdigest() == SHA256
    readme = (text.parent / "README.md").read_text()
    assert "Merity" in readme and "Attribution-ShareAlike 3.0" in readme and SHA256 in readme
    assert "Attribution-ShareAlike 3.0 Unported" in (text.parent / "LICENSE.wikitext2").read_text()


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No benchmark data folder: neither $PRUNEKIT_DATA nor a ../shared/data beside the cwd."""
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "missing"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert data.shared_data_dir() is None


def test_every_default_reads_the_packaged_file_without_a_data_folder(nowhere):
    evaluation = data.default_text(data.EVALUATION_HALF)
    training = data.default_text(data.TRAINING_HALF)
    assert evaluation == f"{packaged()}[:50%]" and training == f"{packaged()}[50%:]"
    assert perplexity.default_source() == evaluation
    assert corpus.default_source() == training
    assert calibration.resolve(calibration.CalibrationOptions(), tiny_model("llama"), run_seed=0).source == training


def test_the_two_halves_are_disjoint_and_cover_the_file(nowhere, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    whole = data.token_stream(tokenizer(), data.default_text(""))
    first = data.token_stream(tokenizer(), data.default_text(data.EVALUATION_HALF))
    second = data.token_stream(tokenizer(), data.default_text(data.TRAINING_HALF))
    assert len(first) > 100_000 and len(first) + len(second) == len(whole)
    assert first.equal(whole[: len(first)]) and second.equal(whole[len(first):])
