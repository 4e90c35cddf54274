"""``model/README.md``: the Hugging Face model card a run writes beside the checkpoint.

The card is read back the way the Hub reads it (``huggingface_hub.ModelCard.load``), its figures
are compared with ``report.json``'s, and the checkpoint must still load with stock transformers.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.chance import above_chance_retention
from prunekit.plugins.report import card as modelcard
from prunekit.cli import app
from prunekit.output import Report
from prunekit.rendering import metric_rows
from prunekit.payloads import Dimension, Importance, Metrics

STDERR = 0.0125
CHANCE = 0.05


class Measured:
    """A pruner (FFN rows by norm) and the run's only evaluator, with figures that change with
    the model's size: perplexity, a task with a standard error, a throughput."""

    @hookimpl
    def score_importance(self, request):
        arch = request.architecture
        return [Importance(Dimension.FFN, [arch.ffn_input_weight(layer).norm(dim=1) for layer in arch.layers(request.model)],
                           report={"criterion": "row norm"})]

    @hookimpl
    def evaluate(self, request):
        if request.stage == "recovery":
            return None
        size = float(sum(p.numel() for p in request.model.parameters()))
        return Metrics(
            perplexity=size / 1000, loss=math.log(size / 1000),
            tasks={"toytask": {"acc": size / 1e6, "acc_norm": size / 2e6}}, primary_metric={"toytask": "acc"},
            latency={"decode_tokens_per_s": 1e7 / size},
            details={"measured": {"stderr": {"toytask": {"acc": STDERR}}, "chance": {"toytask": CHANCE},
                                  "examples": 10}},
        )


@pytest.fixture
def run(register_plugin, tmp_path):
    register_plugin(Measured(), "measured")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--model", "tiny-llama", "--plugins", "measured", "--ratio", "0.5",
                                      "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


def table(text: str) -> dict[str, list[str]]:
    """The cells of every Markdown table row, by the row's first cell."""
    return {cells[0]: cells[1:] for line in text.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}


def figure(cell: str) -> tuple[float, float | None]:
    """``"0.1234 ± 0.0125"`` → (0.1234, 0.0125); ``"12.3"`` → (12.3, None)."""
    value, _, error = cell.partition(" ± ")
    return float(value), float(error) if error else None


def test_a_run_writes_a_card_the_hub_reads_with_the_reports_figures(run):
    card = ModelCard.load(run / "model" / "README.md")
    report = Report.model_validate_json((run / "report.json").read_text())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.tags == ["prunekit", "pruning", "structured-pruning", "measured"]
    assert card.data.base_model is None and card.data.license is None  # random weights come from no Hub model
    assert "plugins, in order: `measured`" in card.text and "ratio: 0.5" in card.text
    assert "ffn pruning: {criterion: row norm}" in card.text and f"prunekit {report.prunekit_version}" in card.text

    rows = table(card.text)
    assert rows["whole model"] == [f"{report.params.before:,}", f"{report.params.after:,}"]
    metrics = metric_rows(report.metrics["before"], report.metrics["after"])
    assert [name for name, _, _ in metrics] == ["perplexity", "loss", "toytask acc", "toytask acc_norm",
                                                "decode_tokens_per_s"]
    for name, before, after in metrics:
        (b, b_err), (a, a_err) = figure(rows[name][0]), figure(rows[name][1])
        assert b == pytest.approx(before, rel=1e-3) and a == pytest.approx(after, rel=1e-3), name
        assert (b_err, a_err) == ((STDERR, STDERR) if name == "toytask acc" else (None, None)), name
    assert report.metrics["after"].perplexity < report.metrics["before"].perplexity  # the figures differ by stage
    assert f"{report.retention.average_retention:.1%} retained" in card.text
    assert re.search(r"decode \d+\.\d\d×", card.text)


def test_report_json_md_and_the_card_give_the_retention_above_chance(run):
    """Per task and on average: before and after ± their standard errors, chance, above-chance retention ± its."""
    report = json.loads((run / "report.json").read_text())
    kept = report["retention"]
    task = kept["tasks"]["toytask"]
    before, after = task["before"], task["after"]
    assert (task["before_stderr"], task["after_stderr"], task["chance"]) == (STDERR, STDERR, CHANCE)
    expected = above_chance_retention(after, STDERR, before, STDERR, CHANCE)
    assert task["above_chance"] == expected.model_dump() and expected.retention is not None
    assert expected.retention == pytest.approx((after - CHANCE) / (before - CHANCE))
    # one task: the average is the task, its standard error the task's
    assert (kept["average_before_stderr"], kept["average_after_stderr"], kept["average_chance"]) == (STDERR, STDERR, CHANCE)
    assert kept["average_above_chance"] == pytest.approx(task["above_chance"])

    row = [f"{before:.4g} ± {STDERR:.4g}", f"{after:.4g} ± {STDERR:.4g}", f"{CHANCE:.4g}",
           f"{expected.retention:.3f} ± {expected.stderr:.3f}"]
    for text in ((run / "report.md").read_text(), (run / "model" / "README.md").read_text()):
        rows = table(text)
        assert rows["toytask (acc)"] == row and rows["average"] == row
        assert "above-chance retention: (after − chance) / (before − chance)" in text


def test_report_md_links_the_card_and_the_checkpoint_still_loads_stock(run):
    assert "[model/README.md](model/README.md)" in (run / "report.md").read_text()
    card = (run / "model" / "README.md").read_text()
    assert f'AutoModelForCausalLM.from_pretrained("{run / "model"}")' in card
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert sum(p.numel() for p in model.parameters()) == json.loads((run / "report.json").read_text())["params"]["after"]
    assert not list((run / "model").glob(".*tmp*"))


@pytest.mark.parametrize(("name", "hub_id", "license"), [
    ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    ("gemma3-270m", "google/gemma-3-270m", "gemma"),
])
def test_a_built_in_models_card_names_its_hub_model_and_licence(run, name, hub_id, license):
    report = Report.model_validate_json((run / "report.json").read_text()).model_copy(update={"model": name})
    card = ModelCard(str(modelcard.render(report, run / "model")))
    assert card.data.base_model == hub_id and card.data.license == license
    assert f"[{hub_id}](https://huggingface.co/{hub_id})" in card.text


def test_a_checkpoint_that_is_not_stock_is_shown_loading_with_prunekit(run):
    report = Report.model_validate_json((run / "report.json").read_text()).model_copy(update={"stock": False})
    text = str(modelcard.render(report, run / "model"))
    assert f'prunekit.load("{run / "model"}")' in text and "AutoModelForCausalLM" not in text


def test_base_model_is_the_hub_id_a_model_comes_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert modelcard.base_model("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert modelcard.base_model("gemma3-270m") == "google/gemma-3-270m"
    assert modelcard.base_model("tiny-llama") is None
    assert modelcard.base_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a Hub id, as given

    def checkpoint(name: str, config: dict, card: str | None = None) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        if card is not None:
            (tmp_path / name / "README.md").write_text(card)
        return str(tmp_path / name)

    assert modelcard.base_model(checkpoint("named", {"_name_or_path": "org/base-model"})) == "org/base-model"
    assert modelcard.base_model(checkpoint("from-a-path", {"_name_or_path": "/data/models/base"})) is None
    assert modelcard.base_model(checkpoint("bare", {"model_type": "llama"})) is None
    # a prunekit output compressed again: its own card names where it came from
    assert modelcard.base_model(checkpoint("pruned", {}, "---\nbase_model: org/base-model\n---\n# x\n")) == "org/base-model"
    assert modelcard.base_model(checkpoint("unnamed", {}, "---\nlibrary_name: transformers\n---\n")) is None
    # a relative local directory is a path, not a Hub id, even though it is shaped like one
    (tmp_path / "runs" / "model").mkdir(parents=True)
    assert modelcard.base_model("runs/model") is None
