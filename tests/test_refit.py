"""``refit``: least-squares compensation of sliced layers, chained with other recovery, stock output."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import hookimpl, pipeline
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.manager import get_plugins
from prunekit.payloads import Dimension, Metrics, RecoverRequest, Recovery, ScoreRequest
from prunekit.plugins import refit
from prunekit.plugins.calibration import CalibrationOptions, calibration_samples, resolve
from prunekit.plugins.models.tiny import FAMILIES, tiny_model, tokenizer
from prunekit.plugins.refit import fitting
from prunekit.uncompressed import UncompressedLayers

runner = CliRunner()
TEXT = "".join(f"line {i}: the sliced layer should write what the whole layer wrote.\n" for i in range(400))
IDS = torch.randint(1, 257, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def uncompressed():
    with UncompressedLayers.temporary() as layers:
        yield layers


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def options(corpus: str, **extra) -> dict:
    return {"source": corpus, "count": 8, "length": 32, "batch_size": 2, **extra}


def cli_options(corpus: str) -> list[str]:
    return [item for key, value in options(corpus).items() for item in ("-o", f"refit.{key}={value}")]


def sliced_copy(model, ratio: float, dimensions: list[Dimension], uncompressed: UncompressedLayers):
    """``model`` sliced at random by the core, as a run slices it, with its layers recorded."""
    plugins = get_plugins()
    config = plugins.resolve_options(RunConfig(model="tiny", plugins=["random"], ratio=ratio,
                                               options={"random": {"dimensions": [d.value for d in dimensions]}}))
    hooks = plugins.hooks(["random"])
    sliced = copy.deepcopy(model)
    architecture = hooks.architecture_for(sliced)
    importances = hooks.score_importance(ScoreRequest(sliced, architecture, config))
    pipeline.slice_by_importance(importances, config, sliced, architecture, hooks, uncompressed)
    return sliced, architecture


def refit_request(model, architecture, uncompressed, corpus, tmp_path, **extra) -> RecoverRequest:
    config = RunConfig(model="tiny", plugins=["refit"], options={"refit": options(corpus, **extra)})
    return RecoverRequest(model, tokenizer(), architecture, config, work_dir=tmp_path / "work", output_dir=tmp_path,
                          uncompressed=uncompressed)


def calibration(model, corpus) -> torch.Tensor:
    chosen = CalibrationOptions(source=corpus, count=8, length=32)
    return calibration_samples(tokenizer(), chosen, resolve(chosen, model, run_seed=0))


def ffn_error(dense, sliced, architecture, samples: torch.Tensor) -> float:
    """Squared error of the first layer's FFN output against the uncompressed one on the same
    inputs (the first layer's inputs, the embeddings, are the same in both models)."""
    outputs = []
    for model in (dense, sliced):
        seen = []
        handle = architecture.output_projection(architecture.layers(model)[0], Dimension.FFN).register_forward_hook(
            lambda module, args, output: seen.append(output))
        with torch.no_grad():
            model(samples, use_cache=False)
        handle.remove()
        outputs.append(seen[0])
    return float((outputs[0] - outputs[1]).square().sum())


def logits_error(dense, sliced, samples) -> float:
    with torch.no_grad():
        return float((dense(samples).logits - sliced(samples).logits).square().mean())


# --- the fit ---------------------------------------------------------------------------------


def test_ridge_is_the_least_squares_solution_pulled_toward_the_start():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    truth = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    normal = fitting.Normal()
    normal.add(features, features @ truth.T)
    start = torch.zeros(3, 6, dtype=torch.float64)
    torch.testing.assert_close(fitting.ridge(normal, start, 1e-12), truth, rtol=1e-4, atol=1e-4)
    # strong damping keeps the start
    torch.testing.assert_close(fitting.ridge(normal, truth, 1e9), truth, rtol=1e-6, atol=1e-6)


def test_a_fit_no_candidate_improves_keeps_the_weights():
    generator = torch.Generator().manual_seed(1)
    fit = fitting.Fit()
    truth = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    for half in (fit.train, fit.held_out):
        features = torch.randn(100, 6, generator=generator, dtype=torch.float64)
        half.add(features, features @ truth.T)
    weight, chosen = fit.solve(truth, [0.01, 0.1])  # the start is already exact
    assert weight is None and chosen == {"damping": None}


def test_residual_weights_keep_one_massive_token_from_dominating_the_fit():
    """The failure residual weighting repairs: one token's target (and the residual it lands in)
    is a thousand times the others' and cannot be reached by the features; unweighted, the fit
    bends every other token's weights toward it, weighted it recovers the others' exact solution."""
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    truth = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    target = features @ truth.T
    target[0] = 1000 * torch.randn(3, generator=generator, dtype=torch.float64)
    residual = torch.ones(200, 4, dtype=torch.float64)
    residual[0] *= 1000 * 1000  # the stream it lands in is as massive again
    start = torch.zeros(3, 6, dtype=torch.float64)
    uniform, weighted = fitting.Normal(), fitting.Normal()
    uniform.add(features, target)
    weights = fitting.residual_weights(residual).double()
    weighted.add(features * weights, target * weights)
    assert (fitting.ridge(uniform, start, 1e-9) - truth).abs().max() > 1
    torch.testing.assert_close(fitting.ridge(weighted, start, 1e-9), truth, rtol=1e-3, atol=1e-3)


def test_both_weightings_lower_the_layer_output_error_with_different_fits(corpus, tmp_path):
    dense = tiny_model("llama")
    samples = calibration(dense, corpus)
    fitted = {}
    for weighting in ("residual", "uniform"):
        with UncompressedLayers.temporary() as uncompressed:
            sliced, architecture = sliced_copy(dense, 0.5, [Dimension.FFN], uncompressed)
            before = ffn_error(dense, sliced, architecture, samples)
            result = refit.recover(refit_request(sliced, architecture, uncompressed, corpus, tmp_path,
                                                 weighting=weighting))
        assert result is not None and result.report["weighting"] == weighting
        assert ffn_error(dense, sliced, architecture, samples) < before
        fitted[weighting] = architecture.output_projection(architecture.layers(sliced)[0], Dimension.FFN).weight
    assert not torch.allclose(fitted["residual"], fitted["uniform"])


@pytest.mark.parametrize("dimensions", [[Dimension.FFN], [Dimension.FFN, Dimension.HEADS]])
def test_refit_lowers_the_layer_output_error_on_calibration_data(dimensions, corpus, tmp_path, uncompressed):
    dense = tiny_model("llama")
    sliced, architecture = sliced_copy(dense, 0.5, dimensions, uncompressed)
    samples = calibration(dense, corpus)
    before_ffn, before_logits = ffn_error(dense, sliced, architecture, samples), logits_error(dense, sliced, samples)

    result = refit.recover(refit_request(sliced, architecture, uncompressed, corpus, tmp_path))
    assert result is not None and result.model is sliced
    after_ffn, after_logits = ffn_error(dense, sliced, architecture, samples), logits_error(dense, sliced, samples)
    assert after_ffn < before_ffn
    assert after_logits < before_logits
    layers = result.report["per_layer"]
    assert [sorted(layer) for layer in layers] == [sorted(d.value for d in dimensions)] * len(layers)
    assert result.report["calibration"]["tokens"] == 8 * 32


def test_refit_when_nothing_was_sliced_changes_nothing(corpus, tmp_path, uncompressed):
    dense = tiny_model("llama")
    sliced, architecture = sliced_copy(dense, 0.0, [Dimension.FFN], uncompressed)
    assert refit.recover(refit_request(sliced, architecture, uncompressed, corpus, tmp_path)) is None
    for name, value in dense.state_dict().items():
        assert torch.equal(value, sliced.state_dict()[name]), name


def test_refit_without_recorded_layers_leaves_the_model(corpus, tmp_path):
    model = tiny_model("llama")
    architecture = get_plugins().hooks([]).architecture_for(model)
    assert refit.recover(refit_request(model, architecture, None, corpus, tmp_path)) is None


# --- runs ------------------------------------------------------------------------------------


def run(tmp_path, plugins: str, ratio: float, *extra: str, model: str = "tiny-llama", name: str = "run"):
    result = runner.invoke(app, ["run", "--model", model, "--plugins", plugins, "--ratio", str(ratio),
                                 "--output", str(tmp_path / name), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_refit_model_reloads_stock_with_identical_logits(family, corpus, tmp_path, logits_probe):
    probe = logits_probe(IDS)
    report = run(tmp_path, "random,refit,probe", 0.5, *cli_options(corpus), model=f"tiny-{family}")
    [step] = report["recovery"]
    assert step["plugin"] == "refit" and step["report"]["projections_refitted"] > 0
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, probe.logits["after"], rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "run" / "checkpoints").exists()  # the recorded layers are elsewhere, and gone


def test_refit_at_ratio_zero_changes_nothing(corpus, tmp_path, logits_probe):
    probe = logits_probe(IDS)
    report = run(tmp_path, "random,refit,probe", 0.0, *cli_options(corpus))
    assert report["recovery"][0]["report"] is None
    torch.testing.assert_close(probe.logits["after"], probe.logits["before"], rtol=0, atol=0)


class Shift:
    """A recovery step that records the first FFN output weight it was given and keeps the model."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    @hookimpl
    def recover(self, request):
        layer = request.architecture.layers(request.model)[0]
        weight = request.architecture.output_projection(layer, Dimension.FFN).weight
        self.seen.append(weight.detach().clone())
        return Recovery(request.model, report={"shifted": True})


class Perplexity:
    """An evaluator reporting a perplexity derived from the model's logits, at every stage."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    @hookimpl
    def evaluate(self, request):
        self.stages.append(request.stage)
        with torch.no_grad():
            loss = request.model(input_ids=IDS, labels=IDS).loss
        return Metrics(perplexity=float(loss.exp()))


@pytest.mark.parametrize("order", [["refit", "shift"], ["shift", "refit"]])
def test_recovery_steps_run_in_the_order_named_each_on_the_previous_model(order, corpus, tmp_path, register_plugin):
    shift, measure = Shift(), Perplexity()
    register_plugin(shift, "shift")
    register_plugin(measure, "ppl")
    report = run(tmp_path, ",".join(["random", *order, "ppl"]), 0.5, *cli_options(corpus))
    steps = report["recovery"]
    assert [step["plugin"] for step in steps] == order
    # before the first step, between the two; the last step's "after" is the run's own "after"
    assert measure.stages == ["before", "recovery", "recovery", "after"]
    assert steps[0]["perplexity_after"] == steps[1]["perplexity_before"]
    assert steps[-1]["perplexity_after"] == report["metrics"]["after"]["perplexity"]
    refitted = steps[order.index("refit")]
    assert refitted["perplexity_after"] != refitted["perplexity_before"]
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").model.layers[0].mlp.down_proj.weight
    if order[0] == "refit":  # the shift saw the refitted weights, which were saved
        torch.testing.assert_close(shift.seen[0], saved)
    else:  # the shift saw the sliced weights, which refit changed afterwards
        assert not torch.allclose(shift.seen[0], saved)
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "| 1 | " + order[0] + " |" in markdown and "| 2 | " + order[1] + " |" in markdown


def test_refit_after_a_whole_model_slicer_is_skipped(corpus, tmp_path):
    report = run(tmp_path, "slicegpt,refit,unmeasured", 0.25, *cli_options(corpus),
                 "-o", f"slicegpt.source={corpus}", "-o", "slicegpt.count=4", "-o", "slicegpt.length=32")
    assert report["recovery"] == [{"plugin": "refit", "report": None, "seconds": report["recovery"][0]["seconds"],
                                   "perplexity_before": None, "perplexity_after": None}]


@pytest.fixture(autouse=True)
def _unmeasured(register_plugin):
    class Unmeasured:
        @hookimpl
        def evaluate(self, request):
            return None

    register_plugin(Unmeasured(), "unmeasured")


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("refit.count=1", "options.refit"),
        ("refit.held_out=1", "options.refit.held_out"),
        ("refit.damping=[]", "options.refit.damping"),
        ("refit.damping=[-1]", "options.refit.damping"),
        ("refit.weighting=equal", "options.refit.weighting"),
        ("refit.source=/no/such/file.txt", "data file not found: /no/such/file.txt"),
    ],
)
def test_bad_refit_settings_are_one_line_errors_before_anything_runs(setting, fragment, tmp_path):
    result = runner.invoke(app, ["run", "--model", "tiny-llama", "--plugins", "random,refit,unmeasured",
                                 "--ratio", "0.5", "--output", str(tmp_path / "run"), "-o", setting])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


# --- the real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_refit_then_lora_both_lower_the_perplexity_in_one_run(tmp_path, shared_data, monkeypatch):
    """The issue's command in small: random slicing at 0.35, then refit and lora in that order,
    each step lowering the perplexity it reports, and a stock checkpoint at the end."""
    monkeypatch.setenv("PRUNEKIT_DATA", str(shared_data))
    result = runner.invoke(app, [
        "run", "--model", "smollm2-135m", "--plugins", "random,refit,lora,perplexity", "--ratio", "0.35",
        "--output", str(tmp_path / "run"), "--json", "-o", "perplexity.length=256", "-o", "perplexity.windows=4",
        "-o", "refit.count=16", "-o", "refit.length=256", "-o", "lora.steps=4", "-o", "lora.sequence_length=128",
        "-o", "lora.batch_size=2", "-o", "lora.eval_sequences=2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    refitted, tuned = report["recovery"]
    assert (refitted["plugin"], tuned["plugin"]) == ("refit", "lora")
    assert refitted["perplexity_after"] < refitted["perplexity_before"] / 3
    assert tuned["perplexity_before"] == refitted["perplexity_after"]
    assert tuned["perplexity_after"] < tuned["perplexity_before"]
    assert report["metrics"]["after"]["perplexity"] == pytest.approx(tuned["perplexity_after"])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.intermediate_size == 998
