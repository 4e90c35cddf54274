"""The default texts ship with prunekit, with their licences, and every text option's default reads them from any
directory and with no data folder: WikiText-2's test split (evaluation), byte-exact, and an excerpt of the OpenStax
corpus (calibration and training), which shares no 13-gram with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from prunekit.plugins import data
from prunekit.plugins import calibration
from prunekit.plugins.evaluators import perplexity
from prunekit.plugins.models.tiny import tiny_model

SHA256 = "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"


BOOKS = 14


def packaged() -> Path:
    return data.packaged(data.EVALUATION_TEXT)


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


def test_the_packaged_training_text_is_the_head_of_each_openstax_book_with_its_attribution_and_licence():
    books = sorted(data.packaged(data.TRAINING_TEXT).iterdir())
    assert [book.suffix for book in books] == [".txt"] * BOOKS  # the folder holds the text only
    assert 1_700_000 < sum(book.stat().st_size for book in books) < 2_000_000
    readme = (packaged().parent / "README.md").read_text()
    assert "Access for free at openstax.org" in readme and "Attribution 4.0 International" in readme
    assert all(book.name in readme for book in books)
    assert "Attribution 4.0 International" in (packaged().parent / "LICENSE.openstax").read_text()


def test_the_packaged_excerpts_are_byte_exact_heads_of_the_shared_corpus(shared_data):
    for book in sorted(data.packaged(data.TRAINING_TEXT).iterdir()):
        excerpt, whole = book.read_bytes(), (shared_data / "openstax" / book.name).read_bytes()
        assert whole.startswith(excerpt) and excerpt.endswith(b"\n") and whole[len(excerpt):].startswith(b"\n")


def test_every_default_reads_the_packaged_texts_without_a_data_folder(nowhere):
    evaluation, training = data.evaluation_text(), data.training_text()
    assert evaluation == f"{packaged()}[:50%]" and training == str(data.packaged(data.TRAINING_TEXT))
    assert perplexity.default_source() == evaluation
    assert calibration.resolve(calibration.CalibrationOptions(), tiny_model("llama"), run_seed=0).source == training


def test_the_training_text_shares_no_13_gram_with_the_evaluation_text(nowhere, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    stated = data.describe(data.training_text(), 1000)
    assert stated["disjoint_from_evaluation"] is True and stated["tokens"] == 1000
    assert stated["evaluation_overlap"].startswith("0 of its ")
    shared, total = data.shared_ngrams(data.evaluation_text(), data.evaluation_text())
    assert shared == total > 100_000  # the check finds overlap where there is some


def test_a_folder_source_reads_its_text_files_and_not_their_readme_or_licence(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "book.txt").write_text("Chapter one.")
    (folder / "README.md").write_text("About this corpus.")
    (folder / "LICENSE-CC-BY-4.0.txt").write_text("Legal code.")
    assert data.load_texts(str(folder)) == ["Chapter one."]


def test_a_json_source_is_checked_against_the_evaluation_text_through_its_text_field(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    quoted = next(line for line in packaged().read_text().splitlines() if len(line.split()) > 40)  # a WikiText line
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"body": quoted}) + "\n" + json.dumps({"body": "Fresh words of my own."}) + "\n")
    stated = data.describe(str(path), 64, text_field="body")
    assert stated["disjoint_from_evaluation"] is False and not stated["evaluation_overlap"].startswith("0 of")
