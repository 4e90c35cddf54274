"""Text sources: local files and folders through ``datasets``, token ranges, windows, the cache."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit.plugins import data
from prunekit.errors import UsageError
from prunekit.plugins.models.tiny import tokenizer


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def test_a_text_file_is_one_document_tokenized_exactly(tmp_path):
    path = tmp_path / "corpus.raw"
    path.write_text("first line\n\nsecond paragraph\n")
    stream = data.token_stream(tokenizer(), str(path))
    assert tokenizer().decode(stream) == "first line\n\nsecond paragraph\n"
    assert list((tmp_path / "cache" / "tokens").glob("*.safetensors"))  # cached for the next run
    assert torch.equal(data.token_stream(tokenizer(), str(path)), stream)


def test_jsonl_documents_are_joined_by_a_blank_line_and_the_field_is_chosen(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(["ab", "cd"])))
    assert data.load_texts(str(path), text_field="body") == ["ab", "cd"]
    assert tokenizer().decode(data.token_stream(tokenizer(), str(path), text_field="body")) == "ab\n\ncd"
    with pytest.raises(UsageError, match="has no field 'text'; its fields: body, id"):
        data.load_texts(str(path))


def test_a_directory_of_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    assert sorted(data.load_texts(str(tmp_path))) == ["alpha", "beta"]


def test_ranges_split_one_stream_without_overlap(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("x" * 1000)
    head = data.token_stream(tokenizer(), f"{path}[:50%]")
    tail = data.token_stream(tokenizer(), f"{path}[50%:]")
    assert len(head) == len(tail) == 500
    assert data.parse_source("a.raw[10%:30%]") == ("a.raw", 0.1, 0.3)
    with pytest.raises(UsageError, match="range must satisfy"):
        data.parse_source("a.raw[60%:30%]")


def test_windows_and_seeded_samples():
    stream = torch.arange(100)
    assert torch.equal(data.windows(stream, 10, count=3, stride=5)[:, 0], torch.tensor([0, 5, 10]))
    assert data.windows(stream, 30).shape == (3, 30)
    first = data.sample_windows(stream, 20, 4, seed=1)
    assert first.shape == (4, 20) and torch.equal(first, data.sample_windows(stream, 20, 4, seed=1))
    assert torch.equal(first[:, 1] - first[:, 0], torch.ones(4, dtype=torch.int64))  # contiguous tokens
    with pytest.raises(UsageError, match="fewer than one window of 200"):
        data.windows(stream, 200)


@pytest.mark.parametrize(
    ("source", "message"),
    [("/no/such/file.txt", "data file not found"), ("./missing.jsonl", "data file not found")],
)
def test_missing_sources_are_usage_errors(source, message):
    with pytest.raises(UsageError, match=message):
        data.load_texts(source)


def test_an_unreachable_hub_dataset_is_a_one_line_usage_error():
    with pytest.raises(UsageError, match="cannot load data 'nobody/no-such-dataset'") as info:
        data.load_texts("nobody/no-such-dataset")
    assert "\n" not in str(info.value)
