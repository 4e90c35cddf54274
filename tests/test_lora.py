"""``lora``: adapters on the right modules, exact merges, stock output, resume, and bad settings."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D
from typer.testing import CliRunner

from prunekit import hookimpl, pipeline
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.errors import UsageError
from prunekit.manager import get_plugins
from prunekit.payloads import Metrics, RecoverRequest
from prunekit.plugins.data import training_text
from prunekit.plugins.training import adapters, checkpoints, corpus, trainer
from prunekit.plugins.lora.options import LoraOptions, resolve
from prunekit.plugins.models.tiny import FAMILIES, tiny_model, tokenizer

from conftest import assert_one_line_error

runner = CliRunner()
WORDS = ("model", "layer", "weight", "token", "channel", "head", "slice", "prune", "train", "merge",
         "small", "dense", "quick", "the", "a", "of", "and", "is", "keeps", "loses")


@pytest.fixture
def text_file(tmp_path) -> Path:
    """About 30k characters of seeded word salad: structure a byte-level model learns in a few steps."""
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
                 for _ in range(600)]
    path = tmp_path / "train.txt"
    path.write_text(" ".join(sentences))
    return path


def fast_options(text: Path, **overrides) -> dict:
    """Settings that train a tiny model in about a second, on the first 80% of the text."""
    return {"data": f"{text}[:80%]", "sequence_length": 64, "batch_size": 4, "steps": 4, "eval_every": 2,
            "eval_sequences": 2, "learning_rate": 1e-2, "rank": 4, "alpha": 8, **overrides}


class Loss:
    """A cheap evaluator for these tests: the mean loss on the last 15% of the test text, which
    recovery (trained on the first 80%) never sees."""

    def __init__(self, text: Path) -> None:
        content = text.read_text()
        ids = tokenizer()(content[-int(0.15 * len(content)):], return_tensors="pt")["input_ids"]
        self.ids = ids[:, : (ids.shape[1] // 64) * 64].reshape(-1, 64)

    @hookimpl
    def evaluate(self, request):
        with torch.no_grad():
            loss = request.model(input_ids=self.ids, labels=self.ids).loss
        return Metrics(extra={"held_out_loss": float(loss)})


@pytest.fixture
def loss_plugin(register_plugin, text_file) -> str:
    register_plugin(Loss(text_file), "testloss")
    return "testloss"


def arch(family: str):
    return get_plugins().hooks([]).architecture_for(tiny_model(family))


def settings_for(family: str, **options):
    return resolve(LoraOptions(**options), on_gpu=False, length=64, targets=arch(family).lora_targets,
                   source="unused", train_sequences=100, run_seed=0)


# --- target modules ---------------------------------------------------------------------------


def adapted_names(model, family: str) -> set[str]:
    config = adapters.lora_config(model, settings_for(family).adapter)
    return set(adapters.matching_modules(model, config))


def test_opt_gets_attention_and_fc_projections_of_every_layer(tiny_model):
    model = tiny_model("opt")
    expected = {f"model.decoder.layers.{i}.{m}" for i in range(2) for m in
                ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")}
    assert adapted_names(model, "opt") == expected
    assert adapters.lora_config(model, settings_for("opt").adapter).fan_in_fan_out is False


def test_gpt2_gets_its_conv1d_projections_with_fan_in_fan_out(tiny_model):
    model = tiny_model("gpt2")
    expected = {f"transformer.h.{i}.{m}" for i in range(2) for m in
                ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert adapted_names(model, "gpt2") == expected
    assert all(isinstance(model.get_submodule(name), Conv1D) for name in expected)
    assert adapters.lora_config(model, settings_for("gpt2").adapter).fan_in_fan_out is True


@pytest.mark.parametrize("family", FAMILIES)
def test_every_linear_layer_of_the_decoder_and_nothing_else_is_adapted(tiny_model, family):
    model = tiny_model(family)
    layers = arch(family).layers(model)
    prefix = {id(layer): name for name, layer in model.named_modules() if any(layer is x for x in layers)}
    linear = {
        f"{prefix[id(layer)]}.{name}"
        for layer in layers for name, module in layer.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D))
    }
    assert adapted_names(model, family) == linear


# --- merging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_model_computes_what_the_adapted_model_computes(tiny_model, family):
    model = tiny_model(family)
    ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(input_ids=ids).logits
    settings = settings_for(family, rank=4, alpha=8)
    adapted = adapters.attach(model, adapters.lora_config(model, settings.adapter), seed=0)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # peft starts B at zero; a trained adapter has B != 0
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    adapted.eval()
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    assert (expected - base).abs().max() > 1e-3, "the adapters must change the output for the test to mean anything"
    merged = adapters.merge(adapted)
    assert type(merged) is type(model)
    assert not [name for name in merged.state_dict() if "lora" in name]
    with torch.no_grad():
        actual = merged(input_ids=ids).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# --- data -------------------------------------------------------------------------------------


def test_held_out_sequences_are_the_tail_and_never_trained_on(text_file):
    text = corpus.load(tokenizer(), str(text_file), length=64, held_out=4, split="train", text_field="text",
                       plugin="lora")
    stream = tokenizer()(text_file.read_text(), add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    whole = stream[: (len(stream) // 64) * 64].reshape(-1, 64)
    assert torch.equal(torch.cat([text.train, text.held_out]), whole)
    assert len(text.held_out) == 4


# --- the plugin in a run ------------------------------------------------------------------------


def run(tmp_path: Path, text: Path, loss_plugin: str, *plugins: str, name: str = "run", **options):
    args = ["run", "--model", "tiny-llama", "--plugins", ",".join([*plugins, loss_plugin]), "--ratio", "0.5",
            "--output", str(tmp_path / name), "--json"]
    if "lora" in plugins:
        for key, value in fast_options(text, **options).items():
            args += ["-o", f"lora.{key}={value}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # nothing but the report on stdout: Trainer's printed logs are off


def test_run_trains_merges_and_saves_a_stock_checkpoint_without_lora(tmp_path, text_file, loss_plugin):
    report = run(tmp_path, text_file, loss_plugin, "random", "lora")
    [step] = report["recovery"]
    assert step["plugin"] == "lora"
    recovery = step["report"]
    assert recovery["steps"] == 4 and [p["step"] for p in recovery["train_loss"]] == [1, 2, 3, 4]
    assert [p["step"] for p in recovery["eval_loss"]] == [0, 2, 4]
    assert recovery["eval_loss_best"] < recovery["eval_loss_start"]
    perplexity = recovery["held_out_perplexity"]
    assert perplexity["with_recovery"] == pytest.approx(math.exp(recovery["eval_loss_best"]), rel=1e-3)
    assert perplexity["with_recovery"] < perplexity["without_recovery"]
    assert recovery["data"]["source"] == f"{text_file}[:80%]"
    settings = recovery["settings"]
    assert recovery["data"]["tokens"] == 4 * settings["batch_size"] * settings["sequence_length"]  # read, not available
    saved = tmp_path / "run" / "model"
    with safe_open(saved / "model.safetensors", "pt") as weights:
        assert not [key for key in weights.keys() if "lora" in key]
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing left behind once merged
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Recovery" in markdown and f"- data: {{source: {text_file}" in markdown
    disjoint = "disjoint from" if recovery["data"]["disjoint_from_evaluation"] else "NOT disjoint from"
    assert (f"- lora recovery, data: {text_file}[:80%], {recovery['data']['tokens']:,} tokens; {disjoint} the "
            "evaluation text (") in markdown.split("## Text read")[1]
    assert f"- lora recovery, data: {text_file}[:80%]" in (saved / "README.md").read_text()  # the model card too
    assert "(recovery.png)" in markdown and (tmp_path / "run" / "recovery.png").stat().st_size > 0
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    assert type(reloaded).__name__ == "LlamaForCausalLM"
    assert reloaded.config.use_cache is True  # Trainer's switch for training is undone

    without = run(tmp_path, text_file, loss_plugin, "random", name="plain")
    after = report["metrics"]["after"]["extra"]["held_out_loss"]
    assert after < without["metrics"]["after"]["extra"]["held_out_loss"]


class Interrupt(Exception):
    """Stands in for Ctrl-C (KeyboardInterrupt would also stop pytest)."""


def config_for(tmp_path: Path, text: Path, loss_plugin: str, name: str, **options) -> RunConfig:
    return RunConfig(model="tiny-llama", plugins=["random", "lora", loss_plugin], ratio=0.5,
                     output=tmp_path / name, options={"lora": fast_options(text, **options)})


def saved_weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(directory / "model" / "model.safetensors", "pt") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()}


def test_an_interrupted_training_leaves_no_output_and_resumes_to_the_same_model(
    tmp_path, text_file, loss_plugin, prunekit_plugins, monkeypatch
):
    def interrupt_after_step_2(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise Interrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer.LossProgress, "on_save", interrupt_after_step_2, raising=False)
        with pytest.raises(Interrupt):
            pipeline.run(config_for(tmp_path, text_file, loss_plugin, "resumed"), prunekit_plugins)
    directory = tmp_path / "resumed"
    assert not (directory / "model").exists() and not (directory / "report.json").exists()
    trainer_dir = directory / "checkpoints" / "lora" / "trainer"
    assert (trainer_dir / "checkpoint-2" / "trainer_state.json").is_file()
    (trainer_dir / "checkpoint-4").mkdir()  # a checkpoint cut off mid-write: no trainer_state.json

    report = pipeline.run(config_for(tmp_path, text_file, loss_plugin, "resumed"), prunekit_plugins)
    assert report.recovery[0].report["resumed_from"] == "checkpoint-2"
    assert [p["step"] for p in report.recovery[0].report["train_loss"]] == [1, 2, 3, 4]

    straight = pipeline.run(config_for(tmp_path, text_file, loss_plugin, "straight"), prunekit_plugins)
    assert straight.recovery[0].report["train_loss"] == report.recovery[0].report["train_loss"]
    resumed, uninterrupted = saved_weights(directory), saved_weights(tmp_path / "straight")
    for key, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=1e-6)


def test_checkpoints_of_another_training_are_not_resumed(tmp_path, text_file, loss_plugin, prunekit_plugins,
                                                         monkeypatch):
    def interrupt(self, args, state, control, **kwargs):
        raise Interrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer.LossProgress, "on_save", interrupt, raising=False)
        with pytest.raises(Interrupt):
            pipeline.run(config_for(tmp_path, text_file, loss_plugin, "mixed"), prunekit_plugins)
    args = ["run", "--model", "tiny-llama", "--plugins", f"random,lora,{loss_plugin}", "--ratio", "0.5",
            "--output", str(tmp_path / "mixed")]
    for key, value in fast_options(text_file, rank=8).items():
        args += ["-o", f"lora.{key}={value}"]
    # the run directory records its command, so another training is refused before anything loads
    assert_one_line_error(runner.invoke(app, args), "holds a run of another command", "options.lora.rank")
    assert (tmp_path / "mixed" / "checkpoints" / "lora" / "trainer" / "checkpoint-2").is_dir()


def test_a_store_refuses_checkpoints_of_another_training(tmp_path):
    """The training's own guard, for a sliced model that differs under the same command."""
    checkpoints.Store(tmp_path / "checkpoints", "lora", {"model": "a", "rank": 4}).claim()
    with pytest.raises(UsageError, match=r"checkpoints of another training \(different model\)"):
        checkpoints.Store(tmp_path / "checkpoints", "lora", {"model": "b", "rank": 4}).claim()


def test_a_finished_adapter_is_merged_again_instead_of_retrained(tmp_path, text_file, loss_plugin, prunekit_plugins):
    config = config_for(tmp_path, text_file, loss_plugin, "again", save_adapter=True)
    first = pipeline.run(config, prunekit_plugins)
    weights = saved_weights(tmp_path / "again")
    (tmp_path / "again" / "report.json").unlink()  # as if the run had stopped after recovery
    shutil.rmtree(tmp_path / "again" / "model")
    adapter = Path(first.recovery[0].report["adapter"])
    assert adapter == tmp_path / "again" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "again" / "checkpoints").exists()  # optimizer state only served resuming

    second = pipeline.run(config, prunekit_plugins)
    assert second.recovery[0].report["resumed_from"] == "finished adapter"
    assert second.recovery[0].report["train_loss"] == first.recovery[0].report["train_loss"]
    for key, tensor in saved_weights(tmp_path / "again").items():
        torch.testing.assert_close(tensor, weights[key], rtol=0, atol=1e-6)


# --- bad settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["lora.rank=0"], ["options.lora.rank"]),
        (["lora.dropout=1.5"], ["options.lora.dropout"]),
        (["lora.steps=5", "lora.epochs=1"], ["steps or epochs, not both"]),
        (["lora.learning_rate=-1"], ["options.lora.learning_rate"]),
        (["lora.data=/no/such/file.txt"], ["options.lora.data", "not found"]),
        (["lora.data=./x.raw[70%:20%]"], ["options.lora.data", "range"]),
        (["lora.rnak=4"], ["options.lora.rnak"]),
    ],
)
def test_invalid_settings_are_rejected_before_anything_runs(tmp_path, options, fragments):
    args = ["run", "--model", "tiny-llama", "--plugins", "random,lora", "--ratio", "0.3",
            "--output", str(tmp_path / "out")]
    for option in options:
        args += ["-o", option]
    assert_one_line_error(runner.invoke(app, args), *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"target_modules": "[query, value]"}, ["no module", "query, value"]),
        ({"sequence_length": 4096}, ["sequence_length 4096", "1024 positions"]),
        ({"eval_every": 50}, ["eval_every 50", "4 training steps"]),
        ({"eval_sequences": 10_000}, ["not enough to hold out 10000"]),
    ],
)
def test_settings_that_do_not_fit_the_model_or_text_are_one_line_errors(tmp_path, text_file, loss_plugin,
                                                                       overrides, fragments):
    args = ["run", "--model", "tiny-llama", "--plugins", f"random,lora,{loss_plugin}", "--ratio", "0.3",
            "--output", str(tmp_path / "out")]
    for key, value in fast_options(text_file, **overrides).items():
        args += ["-o", f"lora.{key}={value}"]
    assert_one_line_error(runner.invoke(app, args), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_tokenizer_cannot_be_trained(tiny_model, prunekit_plugins, tmp_path, text_file):
    from prunekit.plugins import lora

    model = tiny_model("llama")
    config = prunekit_plugins.resolve_options(
        RunConfig(model="tiny-llama", plugins=["lora"], options={"lora": fast_options(text_file)})
    )
    with pytest.raises(UsageError, match="needs the model's tokenizer"):
        lora.recover(RecoverRequest(model, None, arch("llama"), config, tmp_path / "checkpoints", tmp_path))


# --- the real model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_sliced_by_30_percent_has_lower_perplexity_with_lora(tmp_path, shared_data, monkeypatch):
    """The issue's claim in small: a few steps of recovery on the training half of WikiText-2 lower
    the perplexity on the evaluation half, and the result is still a stock checkpoint."""
    monkeypatch.setenv("PRUNEKIT_DATA", str(shared_data))
    common = ["run", "--model", "smollm2-135m", "--ratio", "0.3", "--json",
              "-o", "perplexity.length=256", "-o", "perplexity.windows=4"]
    plain = runner.invoke(app, [*common, "--plugins", "random,perplexity", "--output", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    recovered = runner.invoke(app, [*common, "--plugins", "random,lora,perplexity", "--output", str(tmp_path / "lora"),
                                    "-o", "lora.steps=8", "-o", "lora.sequence_length=128",
                                    "-o", "lora.batch_size=2", "-o", "lora.eval_sequences=4"])
    assert recovered.exit_code == 0, recovered.output
    without, with_lora = json.loads(plain.stdout), json.loads(recovered.stdout)
    assert with_lora["metrics"]["after"]["perplexity"] < without["metrics"]["after"]["perplexity"]
    text = with_lora["recovery"][0]["report"]["data"]
    assert text["source"] == training_text() and text["disjoint_from_evaluation"] is True
    assert text["tokens"] == 8 * 2 * 128
    saved = tmp_path / "lora" / "model"
    with safe_open(saved / "model.safetensors", "pt") as weights:
        assert not [key for key in weights.keys() if "lora" in key]
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.intermediate_size == 1075
