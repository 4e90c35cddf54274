"""Calibration data and the layer-by-layer runner that the calibration pruners share."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from prunekit.plugins import data
from prunekit.errors import UsageError
from prunekit.manager import get_plugins
from prunekit.plugins import calibration
from prunekit.plugins.layer_inputs import capture_inputs
from prunekit.plugins.calibration import CalibrationOptions, calibration_samples, resolve
from prunekit.plugins.models.tiny import FAMILIES, tiny_model, tokenizer

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def samples_from(source: str, seed: int = 0, **fields) -> torch.Tensor:
    options = CalibrationOptions(source=source, count=6, length=40, **fields)
    return calibration_samples(tokenizer(), options, resolve(options, tiny_model("llama"), run_seed=seed))


def test_samples_from_a_local_text_file_are_seeded_windows_of_its_tokens(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    samples = samples_from(str(path))
    assert samples.shape == (6, 40) and samples.dtype == torch.int64
    for sample in samples:  # every sample is a contiguous piece of the file
        assert tokenizer().decode(sample) in TEXT
    assert torch.equal(samples, samples_from(str(path)))
    assert not torch.equal(samples, samples_from(str(path), seed=1))
    assert list((tmp_path / "cache" / "tokens").glob("*.safetensors"))  # tokenized once, cached


def test_a_token_range_keeps_calibration_out_of_the_evaluation_half(tmp_path):
    text = "".join(f"{i:05d}," for i in range(2000))  # every 40-character window occurs once
    path = tmp_path / "numbers.txt"
    path.write_text(text)
    half = len(text) // 2  # byte-level tokenizer: one token per character
    for sample in samples_from(f"{path}[50%:]"):
        assert text.index(tokenizer().decode(sample)) >= half


def test_samples_from_jsonl_read_the_chosen_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"body": line}) for line in TEXT.splitlines()))
    samples = samples_from(str(path), text_field="body")
    assert samples.shape == (6, 40)
    assert all(tokenizer().decode(sample).replace("\n\n", "\n") in TEXT for sample in samples)


def test_defaults_scale_to_the_device_and_read_the_packaged_openstax_text():
    resolved = resolve(CalibrationOptions(), tiny_model("llama"), run_seed=7)
    assert (resolved.count, resolved.length) == calibration.CPU_DEFAULTS
    assert resolved.source == data.training_text()
    assert resolved.seed == 7


def test_a_sample_longer_than_the_model_can_read_is_bad_input():
    with pytest.raises(UsageError, match="calibration length 4096 exceeds the model's 1024 positions"):
        resolve(CalibrationOptions(length=4096), tiny_model("llama"), run_seed=0)


def test_bad_sources_and_a_missing_tokenizer_are_usage_errors(tmp_path):
    with pytest.raises(ValidationError, match="data file not found"):  # as soon as the options are read
        CalibrationOptions(source=str(tmp_path / "missing.txt"))
    with pytest.raises(ValidationError, match="the range must satisfy"):
        CalibrationOptions(source=f"{tmp_path}[70%:20%]")
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(UsageError, match="fewer than one sample of 40"):
        samples_from(str(tmp_path / "short.txt"))
    options = CalibrationOptions(source=str(tmp_path / "short.txt"))
    with pytest.raises(UsageError, match="needs the model's tokenizer"):
        calibration_samples(None, options, resolve(options, tiny_model("llama"), run_seed=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_running_the_captured_inputs_layer_by_layer_reproduces_the_model(family):
    """The recorder sees what each layer gets; feeding layers one at a time gives the model's output."""
    model = tiny_model(family)
    ids = torch.randint(1, 257, (5, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    layers = get_plugins().hooks([]).architecture_for(model).layers(model)
    inputs = capture_inputs(model, layers, ids, batch_size=2)
    assert [h.shape[0] for h in inputs.hidden] == [2, 2, 1]
    assert set(inputs.kwargs) == {(2, 24), (1, 24)}
    torch.testing.assert_close(torch.cat(inputs.hidden), expected[0], rtol=0, atol=0)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            for position, hidden, kwargs in inputs.batches(index):
                inputs.hidden[position] = layer(hidden, **kwargs)
            if index < len(layers) - 1:  # the last entry of hidden_states is after the final norm
                torch.testing.assert_close(torch.cat(inputs.hidden), expected[index + 1], rtol=0, atol=1e-5)
    assert all(not hasattr(layer, "forward") or "forward" not in vars(layer) for layer in layers)
