"""The perplexity and latency evaluators, the baseline cache and the report's before/after/retention."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import pytest
import torch
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.cli import app
from prunekit.plugins.data import evaluation_text, token_stream, token_units
from prunekit.errors import UsageError
from prunekit.output import retention, speedup
from prunekit.payloads import Metrics
from prunekit.plugins.evaluators import perplexity, speed
from prunekit.plugins.models.tiny import VOCAB, tokenizer
from test_cli import assert_one_line_error

runner = CliRunner()
PREFIX = tokenizer().bos_token_id  # each perplexity window starts from it
# Small protocols keep the tiny-model runs fast; the defaults are exercised by the slow tests.
FAST = ["-o", "latency.repeats=2", "-o", "latency.warmup=0", "-o", "latency.prompt_tokens=8",
        "-o", "latency.new_tokens=3", "-o", "perplexity.length=64", "-o", "perplexity.windows=2"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRUNEKIT_NO_BASELINE_CACHE", raising=False)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    return path


def zeroed(model):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return model


# --- perplexity ---------------------------------------------------------------------------------

def test_a_model_that_predicts_uniformly_has_the_vocabulary_size_as_perplexity(tiny_model):
    stream = torch.randint(0, VOCAB, (500,), generator=torch.Generator().manual_seed(0))
    result = perplexity.measure(zeroed(tiny_model("llama")), stream, prefix=PREFIX, length=100, windows_count=4)
    assert result.loss == pytest.approx(math.log(VOCAB), abs=1e-6)
    assert result.perplexity == pytest.approx(VOCAB, rel=1e-6)
    assert result.tokens == 4 * 100


def reference_loss(model, stream, length, stride, count):
    """Each scored token's log-probability from its own forward pass over exactly its context:
    the prefix token, then the tokens of its window before it (the window it is new in)."""
    total, scored = 0.0, 0
    with torch.no_grad():
        for k in range(count):
            start = k * stride
            first = 0 if k == 0 else length - stride
            for position in range(first, length):
                context = torch.cat([torch.tensor([PREFIX]), stream[start : start + position]])
                logits = model(input_ids=context[None]).logits[0, -1]
                total -= torch.log_softmax(logits.double(), -1)[stream[start + position]].item()
                scored += 1
    return total / scored, scored


@pytest.mark.parametrize(("stride", "batch_size"), [(None, 1), (10, 2), (15, 3)])
def test_perplexity_equals_a_token_by_token_computation(tiny_model, stride, batch_size):
    model = tiny_model("llama", seed=3)
    stream = torch.randint(0, VOCAB, (100,), generator=torch.Generator().manual_seed(1))
    expected_loss, expected_tokens = reference_loss(model, stream, 16, stride or 16, 3)
    result = perplexity.measure(model, stream, prefix=PREFIX, length=16, stride=stride, windows_count=3,
                                batch_size=batch_size)
    assert result.tokens == expected_tokens
    assert result.loss == pytest.approx(expected_loss, abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected_loss), rel=1e-5)


UNICODE_TEXT = "Größe matters: a naïve café test, twice over.\n" * 7


def word_tokenizer(text):
    """A second tokenization of ``text``: whole words and punctuation runs (the tiny model's is one token per byte)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = sorted({piece for piece, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)})
    backend = Tokenizer(models.WordLevel({"<s>": 0, **{p: i + 1 for i, p in enumerate(pieces)}}, unk_token="<s>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="<s>")


def test_bits_per_byte_and_word_perplexity_of_a_uniform_model_by_hand(tmp_path, tiny_model):
    path = tmp_path / "text.txt"
    path.write_text(UNICODE_TEXT)
    stream, units = token_stream(tokenizer(), str(path)), token_units(tokenizer(), str(path))
    result = perplexity.measure(zeroed(tiny_model("llama")), stream, prefix=PREFIX, length=64, windows_count=None,
                                units=units)
    text_bytes, words = len(UNICODE_TEXT.encode()), len(UNICODE_TEXT.split())  # 350 bytes (322 characters), 56 words
    assert (result.tokens, result.bytes, result.words) == (text_bytes, text_bytes, words) == (350, 350, 56)
    assert result.windows == 6  # five whole windows and one ending at the text's end, for the tail
    nats = text_bytes * math.log(VOCAB)  # every byte-token costs ln(257) under uniform predictions
    assert result.bits_per_byte == pytest.approx(nats / (text_bytes * math.log(2)), rel=1e-6)
    assert math.log(result.word_perplexity) == pytest.approx(nats / words, rel=1e-6)  # exp(35.3): compare its log


def test_two_tokenizations_of_one_text_with_equal_likelihood_have_equal_bits_per_byte(tmp_path, tiny_model):
    path = tmp_path / "text.txt"
    path.write_text(UNICODE_TEXT)
    model = zeroed(tiny_model("llama"))
    results = []
    for tokenize in (tokenizer(), word_tokenizer(UNICODE_TEXT)):
        stream, units = token_stream(tokenize, str(path)), token_units(tokenize, str(path))
        results.append(perplexity.measure(model, stream, prefix=tokenize.bos_token_id, length=16, windows_count=None,
                                          units=units))
    by_bytes, by_words = results
    assert by_words.tokens < by_bytes.tokens  # two different tokenizations, every token of each scored
    assert by_bytes.bytes == by_words.bytes == len(UNICODE_TEXT.encode())
    assert by_bytes.words == by_words.words == len(UNICODE_TEXT.split())
    total = by_bytes.loss * by_bytes.tokens  # the log-likelihood a model gives both tokenizations alike
    same = dataclasses.replace(by_words, loss=total / by_words.tokens)
    assert same.bits_per_byte == pytest.approx(by_bytes.bits_per_byte, rel=1e-12)
    assert same.word_perplexity == pytest.approx(by_bytes.word_perplexity, rel=1e-12)
    assert math.exp(same.loss) != pytest.approx(by_bytes.perplexity)  # per token, the two differ


def test_all_windows_score_every_token_of_the_text_once(text_file):
    result = runner.invoke(app, ["eval", "--model", "tiny-llama", "--plugins", "perplexity", "-o",
                                 f"perplexity.source={text_file}", "-o", "perplexity.length=100",
                                 "-o", "perplexity.windows=all", "--json"])
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)["metrics"]["details"]["perplexity"]
    assert details["tokens_scored"] == len(token_stream(tokenizer(), str(text_file))) == 900
    assert details["bytes_scored"] == len(text_file.read_text().encode())


def test_perplexity_evaluator_reads_its_text_and_records_how(text_file, tiny_model):
    result = runner.invoke(app, ["eval", "--model", "tiny-llama", "--plugins", "perplexity", "-o",
                                 f"perplexity.source={text_file}", "-o", "perplexity.length=128",
                                 "-o", "perplexity.stride=64", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    expected = perplexity.measure(tiny_model("llama"), token_stream(tokenizer(), str(text_file)), prefix=PREFIX,
                                  length=128, stride=64, windows_count=4,
                                  units=token_units(tokenizer(), str(text_file)))
    assert metrics["perplexity"] == pytest.approx(expected.perplexity, rel=1e-9)
    assert metrics["loss"] == pytest.approx(expected.loss, rel=1e-9)
    assert metrics["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-9)
    assert metrics["word_perplexity"] == pytest.approx(expected.word_perplexity, rel=1e-9)
    assert metrics["details"]["perplexity"] == {
        "source": str(text_file), "split": "test", "windows": 4, "length": 128, "stride": 64, "prefix_token": PREFIX,
        "tokens_scored": expected.tokens, "bytes_scored": expected.bytes, "words_scored": expected.words,
        "batch_size": 1,
    }
    assert metrics["latency"] == {} and metrics["tasks"] == {}  # only the named evaluator measured


def test_default_window_fits_the_model_context(tiny_model):
    model = tiny_model("gpt2")  # 1024 positions, one of them the BOS prefix's
    assert perplexity.window_length(model, None) == 1023
    assert perplexity.window_length(model, 64) == 64


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["perplexity.length=4096"], ["options.perplexity.length 4096 and its BOS prefix exceed the model's context of "
                                      "1024 tokens; give at most 1023"]),
        (["perplexity.length=1024"], ["give at most 1023"]),
        (["perplexity.windows=most"], ["options.perplexity.windows: Input should be a valid integer"]),
        (["perplexity.length=64", "perplexity.stride=65"], ["stride 65 exceeds the window length 64"]),
        (["perplexity.length=1000"], ["fewer than one window of 1000"]),
        (["perplexity.windos=3"], ["options.perplexity.windos: Extra inputs are not permitted"]),
        (["perplexity.windows=0"], ["options.perplexity.windows: Input should be greater than 0"]),
        (["perplexity.source=./no/such/file.txt"], ["data file not found: ./no/such/file.txt"]),
    ],
)
def test_bad_perplexity_settings_are_one_line_errors(text_file, options, fragments):
    args = ["eval", "--model", "tiny-llama", "--plugins", "perplexity"]
    if not any("source" in option for option in options):
        args += ["-o", f"perplexity.source={text_file}"]
    for option in options:
        args += ["-o", option]
    assert_one_line_error(runner.invoke(app, args), "Error: ", *fragments)


def test_sampled_windows_are_drawn_with_the_run_seed_through_the_hook(text_file, tiny_model):
    """``options.perplexity.sample``, as a search measures its evaluation batches."""
    from prunekit.config import RunConfig
    from prunekit.plugins.data import sample_windows
    from prunekit.manager import get_plugins
    from prunekit.payloads import EvalRequest

    options = {"source": str(text_file), "length": 32, "windows": 3, "sample": True}
    config = RunConfig(model="tiny-llama", seed=11, options={"perplexity": options})
    model = tiny_model("llama")
    metrics = get_plugins().hooks([]).evaluate_one("perplexity", EvalRequest(model, tokenizer(), config, "after"))
    drawn = sample_windows(token_stream(tokenizer(), str(text_file)), 32, 3, 11)
    expected = perplexity.measure(model, drawn.reshape(-1), prefix=PREFIX, length=32, windows_count=3)
    assert metrics.loss == expected.loss
    assert metrics.details["perplexity"]["sample_seed"] == 11 and metrics.details["perplexity"]["windows"] == 3


def test_sampled_windows_take_a_count_and_no_stride(text_file):
    for extra in (["perplexity.stride=16"], ["perplexity.windows=null"]):
        args = ["eval", "--model", "tiny-llama", "--plugins", "perplexity", "-o", f"perplexity.source={text_file}",
                "-o", "perplexity.length=32", "-o", "perplexity.sample=true"]
        assert_one_line_error(runner.invoke(app, [*args, *(a for option in extra for a in ("-o", option))]),
                       "options.perplexity.sample draws a number of windows")


# --- latency ------------------------------------------------------------------------------------

def test_latency_reports_median_and_spread_of_repeated_runs(tiny_model):
    options = speed.LatencyOptions(prompt_tokens=16, new_tokens=4, warmup=1, repeats=3)
    result = speed.measure(tiny_model("llama"), options)
    summary = result.summary()
    for phase in ("prefill", "decode"):
        runs = getattr(result, f"{phase}_tokens_per_s")
        assert len(runs) == 3 and all(rate > 0 for rate in runs)
        assert summary[f"{phase}_tokens_per_s"] == statistics.median(runs)
        assert summary[f"{phase}_tokens_per_s_min"] == min(runs) <= statistics.median(runs) <= max(runs)
        assert summary[f"{phase}_tokens_per_s_max"] == max(runs)
    weights = sum(p.numel() * 4 for p in tiny_model("llama").parameters()) / 2**20
    assert summary["weights_mb"] == pytest.approx(weights, abs=0.01)
    assert summary["peak_memory_mb"] >= summary["weights_mb"]
    protocol = result.protocol()
    assert protocol["batch_size"] == 1 and protocol["prompt_tokens"] == 16 and protocol["new_tokens"] == 4
    assert protocol["warmup"] == 1 and protocol["repeats"] == 3 and protocol["device"] == "cpu"
    assert protocol["runs"]["decode_tokens_per_s"] == result.decode_tokens_per_s


def test_latency_generates_every_token_even_when_the_model_wants_to_stop(tiny_model):
    model = zeroed(tiny_model("llama"))  # uniform logits: greedy picks id 0, the end-of-sequence token
    result = speed.measure(model, speed.LatencyOptions(prompt_tokens=4, new_tokens=5, warmup=0, repeats=1, batch_size=2))
    assert len(result.decode_tokens_per_s) == 1


def test_latency_longer_than_the_context_is_bad_input(tiny_model):
    with pytest.raises(UsageError, match="exceeds the model's context of 1024 tokens"):
        speed.measure(tiny_model("gpt2"), speed.LatencyOptions(prompt_tokens=1000, new_tokens=100))


# --- the report ---------------------------------------------------------------------------------

def test_retention_uses_each_task_primary_metric_and_speedup_divides_throughputs():
    before = Metrics(tasks={"piqa": {"acc": 0.6, "acc_norm": 0.7}, "winogrande": {"acc": 0.5}},
                     primary_metric={"piqa": "acc_norm", "winogrande": "acc"},
                     latency={"decode_tokens_per_s": 10.0, "decode_tokens_per_s_min": 8.0, "peak_memory_mb": 5.0})
    after = Metrics(tasks={"piqa": {"acc": 0.5, "acc_norm": 0.56}, "winogrande": {"acc": 0.45}},
                    primary_metric={"piqa": "acc_norm", "winogrande": "acc"},
                    latency={"decode_tokens_per_s": 15.0, "decode_tokens_per_s_min": 9.0, "peak_memory_mb": 4.0})
    kept = retention(before, after)
    assert kept.tasks["piqa"].metric == "acc_norm" and kept.tasks["piqa"].retention == pytest.approx(0.8)
    assert kept.tasks["winogrande"].retention == pytest.approx(0.9)
    assert kept.average_before == pytest.approx(0.6) and kept.average_after == pytest.approx(0.505)
    assert kept.average_retention == pytest.approx(0.505 / 0.6)
    assert kept.mean_task_retention == pytest.approx(0.85)
    assert speedup(before, after) == {"decode_tokens_per_s": pytest.approx(1.5)}


def test_merged_metrics_keep_each_evaluators_parts_and_refuse_a_second_loss():
    from prunekit.hooks import merge_metrics

    merged = merge_metrics([
        Metrics(perplexity=2.0, loss=math.log(2.0), details={"perplexity": {"windows": 4}}),
        Metrics(tasks={"piqa": {"acc": 0.5}}, primary_metric={"piqa": "acc"}, details={"zeroshot": {"limit": 5}}),
    ])
    assert (merged.perplexity, merged.loss, merged.primary_metric) == (2.0, math.log(2.0), {"piqa": "acc"})
    assert merged.details == {"perplexity": {"windows": 4}, "zeroshot": {"limit": 5}}
    with pytest.raises(RuntimeError, match="two evaluators reported loss"):
        merge_metrics([Metrics(loss=1.0), Metrics(loss=2.0)])
    with pytest.raises(RuntimeError, match=r"two evaluators reported details \['x'\]"):
        merge_metrics([Metrics(details={"x": 1}), Metrics(details={"x": 2})])


def run(tmp_path, name, *extra):
    out = tmp_path / name
    result = runner.invoke(app, ["run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.5",
                                 "--output", str(out), "--json", *FAST, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_run_reports_before_after_retention_speedup_and_caches_the_baseline(tmp_path, monkeypatch):
    calls = []
    original = perplexity.measure
    monkeypatch.setattr(perplexity, "measure", lambda *a, **k: calls.append(1) or original(*a, **k))

    first, out = run(tmp_path, "first")
    assert len(calls) == 2  # before and after
    before, after = first["metrics"]["before"], first["metrics"]["after"]
    for stage in (before, after):
        assert stage["perplexity"] == pytest.approx(math.exp(stage["loss"]))
        assert stage["latency"]["decode_tokens_per_s"] > 0
    assert after["perplexity"] != before["perplexity"]
    assert set(first["speedup"]) == {"prefill_tokens_per_s", "decode_tokens_per_s"}
    assert first["speedup"]["decode_tokens_per_s"] == pytest.approx(
        after["latency"]["decode_tokens_per_s"] / before["latency"]["decode_tokens_per_s"])
    assert first["retention"]["tasks"] == {}  # no tasks given: zero-shot did not measure
    assert first["baseline"]["cached"] == []
    assert set(first["baseline"]["measured"]) == {"perplexity", "latency", "generation"}
    assert first["ideal_speedup"] == pytest.approx(first["params"]["before"] / first["params"]["after"])
    shown = {stage: first["metrics"][stage]["details"]["generation"] for stage in ("before", "after")}
    assert shown["before"]["prompt"] == shown["after"]["prompt"] and shown["before"]["text"] != shown["after"]["text"]
    assert first["config"]["options"]["perplexity"]["windows"] == 2  # resolved settings recorded
    assert first["config"]["options"]["latency"]["repeats"] == 2
    assert first["disk_bytes"]["before"] is None and first["disk_bytes"]["after"] > 0
    markdown = (out / "report.md").read_text()
    assert "| perplexity |" in markdown and "| loss |" in markdown and "Speedup (after / before" in markdown
    assert "baseline (before): " in markdown and "How it was measured" in markdown
    assert f"- after: {' '.join(shown['after']['text'].split())!r}" in markdown and "; ideal " in markdown

    calls.clear()
    second, out = run(tmp_path, "second")
    assert len(calls) == 1  # only the compressed model: the baseline's perplexity came from the cache
    assert set(second["baseline"]["cached"]) == {"perplexity", "generation"}  # both a function of the weights
    assert second["baseline"]["measured"] == ["latency"]  # speed is always re-measured in-process
    assert second["metrics"]["before"]["perplexity"] == before["perplexity"]
    assert second["metrics"]["before"]["details"]["perplexity"] == before["details"]["perplexity"]
    assert "perplexity from the cache (model fingerprint " in (out / "report.md").read_text()

    calls.clear()
    third, _ = run(tmp_path, "third", "-o", "perplexity.windows=1")
    assert len(calls) == 2 and "perplexity" in third["baseline"]["measured"]  # other settings, other key

    calls.clear()
    monkeypatch.setenv("PRUNEKIT_NO_BASELINE_CACHE", "1")
    fourth, _ = run(tmp_path, "fourth")
    assert len(calls) == 2 and fourth["baseline"]["cached"] == [] and fourth["baseline"]["fingerprint"] is None


def test_eval_of_a_run_model_repeats_the_runs_after_measurement(tmp_path):
    report, out = run(tmp_path, "run", "--plugins", "random,perplexity")
    result = runner.invoke(app, ["eval", "--model", str(out / "model"), "--plugins", "perplexity",
                                 "-o", "perplexity.length=64", "-o", "perplexity.windows=2", "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    assert evaluation["metrics"]["perplexity"] == pytest.approx(report["metrics"]["after"]["perplexity"], rel=1e-6)
    assert evaluation["params"] == report["params"]["after"]
    assert evaluation["disk_bytes"] == report["disk_bytes"]["after"] > 0


class CountingEvaluator:
    def __init__(self):
        self.stages = []

    @hookimpl
    def evaluate(self, request):
        self.stages.append(request.stage)
        return Metrics(extra={"count": float(len(self.stages))})


def test_evaluators_registered_in_process_are_never_cached(register_plugin, tmp_path):
    counter = CountingEvaluator()
    register_plugin(counter, "counter")
    for name in ("a", "b"):
        result = runner.invoke(app, ["run", "--model", "tiny-llama", "--plugins", "random,counter", "--ratio", "0.5",
                                     "--output", str(tmp_path / name), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["baseline"] == {"fingerprint": None, "cached": [], "measured": ["counter"]}
    assert counter.stages == ["before", "after", "before", "after"]


def test_without_a_data_folder_perplexity_reads_the_packaged_text(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "missing"))
    monkeypatch.chdir(tmp_path)  # and no ../shared/data beside the working directory
    report, _ = run(tmp_path, "run")
    for stage in ("before", "after"):
        measured = report["metrics"][stage]
        assert measured["perplexity"] > 1 and measured["details"]["perplexity"]["source"] == evaluation_text()


def test_zeroshot_measures_nothing_without_tasks():
    result = runner.invoke(app, ["eval", "--model", "tiny-llama", "--plugins", "zeroshot", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["tasks"] == {} and metrics["details"] == {}


# --- the real model -----------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_wikitext2_perplexity_matches_the_reference(shared_data):
    """The data README's reference: SmolLM2-135M-Instruct, 2048-token windows, first 10: 20.1 (20.14 measured with
    each window after the BOS prefix; 20.10 when each window's first token is context only)."""
    from prunekit.models import load_model

    loaded = load_model("smollm2-135m")
    source = f"{shared_data / 'wikitext2.test.raw'}[:50%]"
    stream, units = token_stream(loaded.tokenizer, source), token_units(loaded.tokenizer, source)
    result = perplexity.measure(loaded.model, stream, prefix=perplexity.prefix_token(loaded.tokenizer), length=2048,
                                windows_count=10, units=units)
    assert result.tokens == 10 * 2048
    assert result.perplexity == pytest.approx(20.1, abs=0.05)
    assert result.bits_per_byte == pytest.approx(1.085, abs=0.001)
