"""``distill``: the KL it minimizes, a run into a stock checkpoint, resume, and bad settings."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import pipeline
from prunekit.cli import app
from prunekit.config import RunConfig
from prunekit.errors import UsageError
from prunekit.models import load_model
from prunekit.payloads import RecoverRequest
from prunekit.plugins import distill
from prunekit.plugins.data import token_stream
from prunekit.plugins.distill.loss import forward_kl
from prunekit.plugins.evaluators import perplexity
from prunekit.plugins.models.tiny import tokenizer
from prunekit.plugins.training import trainer

from conftest import assert_one_line_error

runner = CliRunner()
WORDS = ("model", "layer", "weight", "token", "teacher", "student", "slice", "prune", "train", "merge",
         "small", "dense", "quick", "the", "a", "of", "and", "is", "keeps", "loses")


@pytest.fixture
def text_file(tmp_path) -> Path:
    """About 30k characters of seeded word salad."""
    rng = random.Random(0)
    path = tmp_path / "train.txt"
    path.write_text(" ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
                             for _ in range(600)))
    return path


def fast_options(text: Path, **overrides) -> dict:
    """Settings that distil a tiny model in a few seconds: 4 steps of 4 x 64 tokens."""
    return {"data": str(text), "sequence_length": 64, "batch_size": 4, "tokens": 1024, "eval_every": 2,
            "eval_sequences": 2, "learning_rate": 1e-4, **overrides}


def arguments(tmp_path: Path, text: Path, ratio: float, name: str, **overrides) -> list[str]:
    args = ["run", "--model", "tiny-llama", "--plugins", "random,distill,perplexity", "--ratio", str(ratio),
            "--output", str(tmp_path / name), "--json", "-o", "perplexity.windows=2", "-o", "perplexity.length=64"]
    for key, value in fast_options(text, **overrides).items():
        args += ["-o", f"distill.{key}={value}"]
    return args


def run(tmp_path: Path, text: Path, ratio: float = 0.5, name: str = "run", **overrides) -> dict:
    result = runner.invoke(app, arguments(tmp_path, text, ratio, name, **overrides))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def saved_weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(directory / "model" / "model.safetensors", "pt") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()}


# --- the loss -----------------------------------------------------------------------------------


def plain_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """The definition, by autograd: Σ p (log p − log q) over the (top-k renormalized) teacher's tokens, × T²."""
    target = teacher / temperature
    log_q = torch.log_softmax(student / temperature, dim=-1)
    if top_k is not None:
        target, kept = target.topk(top_k, dim=-1)
        log_q = log_q.gather(-1, kept)
    log_p = torch.log_softmax(target, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (2.0, None), (1.0, 3), (1.5, 5)])
def test_the_kl_and_its_gradient_are_the_definitions(temperature, top_k):
    torch.manual_seed(0)
    student = torch.randn(2, 3, 11, requires_grad=True)
    teacher = torch.randn(2, 3, 11)
    ours = forward_kl(student, teacher, temperature=temperature, top_k=top_k)
    reference = plain_kl(student, teacher, temperature, top_k)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    (gradient,) = torch.autograd.grad(ours.sum(), student)
    (expected,) = torch.autograd.grad(reference.sum(), student)
    torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-6)


def test_the_kl_reads_the_whole_vocabulary_and_top_k_only_the_teachers_k_largest():
    """Hand computation on a 4-token vocabulary: the teacher's two smallest logits matter to the full KL and not to
    top-2, which renormalizes the teacher's two largest and reads the student's full-vocabulary log-probabilities."""
    teacher = torch.tensor([2.0, 1.0, 0.0, -1.0])
    student = torch.tensor([0.0, 0.0, 0.0, 0.0])
    p = torch.softmax(teacher, dim=0)
    full = float((p * (p.log() - math.log(1 / 4))).sum())
    assert float(forward_kl(student, teacher)) == pytest.approx(full, abs=1e-6)
    head = torch.softmax(teacher[:2], dim=0)
    top2 = float((head * (head.log() - math.log(1 / 4))).sum())
    assert float(forward_kl(student, teacher, top_k=2)) == pytest.approx(top2, abs=1e-6)
    changed_tail = torch.tensor([2.0, 1.0, -5.0, -6.0])
    assert float(forward_kl(student, changed_tail, top_k=2)) == pytest.approx(top2, abs=1e-6)
    assert float(forward_kl(student, changed_tail)) != pytest.approx(full, abs=1e-3)
    assert float(forward_kl(student, teacher, top_k=4)) == pytest.approx(full, abs=1e-6)


def test_a_student_equal_to_its_teacher_has_zero_kl_and_exactly_zero_gradients(tiny_model):
    """With autograd through log_softmax the gradient here is rounding residue, which Adam scales up to full updates."""
    model = tiny_model("llama")
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher = model(input_ids=ids).logits
    kl = forward_kl(model(input_ids=ids).logits, teacher)
    assert torch.count_nonzero(kl) == 0
    kl.mean().backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


# --- the plugin in a run ------------------------------------------------------------------------


def test_distilling_the_uncompressed_model_into_itself_leaves_it_unchanged(tmp_path, text_file):
    report = run(tmp_path, text_file, ratio=0.0, name="same")
    recovery = report["recovery"][0]["report"]
    assert recovery["steps"] == 4 and all(point["kl"] == 0 for point in recovery["eval_kl"])
    original = load_model("tiny-llama").model.state_dict()
    saved = saved_weights(tmp_path / "same")
    assert all(saved[key].equal(original[key]) for key in saved)


def test_a_run_distils_every_parameter_into_a_stock_checkpoint_with_its_curves(tmp_path, text_file):
    report = run(tmp_path, text_file)
    [step] = report["recovery"]
    assert step["plugin"] == "distill"
    recovery = step["report"]
    assert recovery["teacher"] == "tiny-llama" and "every parameter" in recovery["method"]
    assert recovery["steps"] == 4 and recovery["tokens_seen"] == 4 * 4 * 64 == recovery["data"]["tokens"]
    assert [p["step"] for p in recovery["eval_kl"]] == [0, 2, 4]
    assert recovery["eval_kl"][-1]["kl"] < recovery["eval_kl"][0]["kl"]
    assert [p["step"] for p in recovery["eval_perplexity"]] == [0, 2, 4]
    held_out = recovery["held_out_perplexity"]
    assert held_out["without_recovery"] == pytest.approx(recovery["eval_perplexity"][0]["perplexity"], rel=1e-3)
    assert recovery["settings"]["temperature"] == 1.0 and recovery["settings"]["ce_weight"] == 0.0
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoints").exists()  # nothing left behind once the model is kept
    markdown = (run_dir / "report.md").read_text()
    assert "### distill" in markdown and "(recovery.png)" in markdown and (run_dir / "recovery.png").stat().st_size
    assert f"- distill recovery, data: {text_file}" in markdown.split("## Text read")[1]

    reloaded = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.use_cache is True
    assert recovery["trainable_parameters"] == sum(t.numel() for t in reloaded.parameters())
    stream = token_stream(tokenizer(), perplexity.default_source())
    again = perplexity.measure(reloaded, stream, prefix=perplexity.prefix_token(tokenizer()), length=64,
                               windows_count=2)
    assert again.perplexity == pytest.approx(report["metrics"]["after"]["perplexity"], rel=1e-6)


def test_with_lora_only_adapters_train_and_are_merged_and_top_k_and_ce_weight_are_recorded(tmp_path, text_file):
    report = run(tmp_path, text_file, lora=True, top_k=8, ce_weight=0.5)
    recovery = report["recovery"][0]["report"]
    assert "LoRA adapters merged" in recovery["method"]
    assert recovery["trainable_parameters"] < 0.5 * sum(t.numel() for t in load_model("tiny-llama").model.parameters())
    assert recovery["settings"]["top_k"] == 8 and recovery["settings"]["ce_weight"] == 0.5
    with safe_open(tmp_path / "run" / "model" / "model.safetensors", "pt") as weights:
        assert not [key for key in weights.keys() if "lora" in key]


def test_a_teacher_offloaded_to_disk_teaches_the_same_model(tmp_path, text_file):
    """accelerate places the teacher within 30 kB of CPU memory and reads the rest from its checkpoint for every
    forward pass: slower, and the distilled model is the same."""
    saved = tmp_path / "tiny"
    loaded = load_model("tiny-llama")
    loaded.model.save_pretrained(saved)
    loaded.tokenizer.save_pretrained(saved)
    weights = {}
    for name, extra in (("plain", []), ("offloaded", ["-o", f"distill.teacher_offload={tmp_path / 'offload'}",
                                                       "-o", "distill.teacher_memory=30KB"])):
        args = arguments(tmp_path, text_file, 0.5, name)
        args[args.index("tiny-llama")] = str(saved)
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        weights[name] = saved_weights(tmp_path / name)
    for key, tensor in weights["plain"].items():
        assert weights["offloaded"][key].equal(tensor), key


class Interrupt(Exception):
    """Stands in for Ctrl-C (KeyboardInterrupt would also stop pytest)."""


def test_an_interrupted_distillation_resumes_to_the_same_model(tmp_path, text_file, prunekit_plugins, monkeypatch):
    def config(name: str) -> RunConfig:
        return RunConfig(model="tiny-llama", plugins=["random", "distill"], ratio=0.5, output=tmp_path / name,
                         options={"distill": fast_options(text_file)})

    def interrupt_after_step_2(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise Interrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer.LossProgress, "on_save", interrupt_after_step_2, raising=False)
        with pytest.raises(Interrupt):
            pipeline.run(config("resumed"), prunekit_plugins)
    assert not (tmp_path / "resumed" / "model").exists()
    assert (tmp_path / "resumed" / "checkpoints" / "distill" / "trainer" / "checkpoint-2").is_dir()

    report = pipeline.run(config("resumed"), prunekit_plugins)
    assert report.recovery[0].report["resumed_from"] == "checkpoint-2"
    straight = pipeline.run(config("straight"), prunekit_plugins)
    assert straight.recovery[0].report["train_loss"] == report.recovery[0].report["train_loss"]
    resumed, uninterrupted = saved_weights(tmp_path / "resumed"), saved_weights(tmp_path / "straight")
    for key, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=1e-6)


# --- bad settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["distill.temperature=0"], ["options.distill.temperature"]),
        (["distill.tokens=0"], ["options.distill.tokens"]),
        (["distill.top_k=-1"], ["options.distill.top_k"]),
        (["distill.ce_weight=-1"], ["options.distill.ce_weight"]),
        (["distill.data=/no/such/file.txt"], ["options.distill.data", "not found"]),
        (["distill.temprature=2"], ["options.distill.temprature"]),
    ],
)
def test_invalid_settings_are_rejected_before_anything_runs(tmp_path, options, fragments):
    args = ["run", "--model", "tiny-llama", "--plugins", "random,distill", "--ratio", "0.3",
            "--output", str(tmp_path / "out")]
    for option in options:
        args += ["-o", option]
    assert_one_line_error(runner.invoke(app, args), *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"top_k": 100_000}, ["top_k 100000", "exceeds the model's"]),
        ({"sequence_length": 4096}, ["sequence_length 4096", "1024 positions"]),
        ({"eval_every": 50}, ["eval_every 50", "4 training steps"]),
        ({"eval_sequences": 10_000}, ["distill:", "not enough to hold out 10000"]),
    ],
)
def test_settings_that_do_not_fit_the_model_or_text_are_one_line_errors(tmp_path, text_file, overrides, fragments):
    result = runner.invoke(app, arguments(tmp_path, text_file, 0.3, "out", **overrides))
    assert_one_line_error(result, *fragments)


def test_a_model_without_a_tokenizer_cannot_be_distilled(tiny_model, prunekit_plugins, tmp_path, text_file):
    model = tiny_model("llama")
    config = prunekit_plugins.resolve_options(
        RunConfig(model="tiny-llama", plugins=["distill"], options={"distill": fast_options(text_file)}))
    architecture = prunekit_plugins.hooks([]).architecture_for(model)
    with pytest.raises(UsageError, match="distill trains on text and needs the model's tokenizer"):
        distill.recover(RecoverRequest(model, None, architecture, config, tmp_path / "checkpoints", tmp_path))
