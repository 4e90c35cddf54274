"""``core search`` end to end on tiny models: the chosen model, the report, the infeasible-budget
message, bad input, and a Pareto search."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prunekit.cli import app

# small and quick: two batches of one short window, short latency runs, a short final evaluation
QUICK = [
    "--batches", "2", "--windows", "1", "--window-length", "64",
    "-o", "latency.repeats=1", "-o", "latency.warmup=0", "-o", "latency.prompt_tokens=16", "-o", "latency.new_tokens=4",
    "-o", "perplexity.windows=1", "-o", "perplexity.length=64",
]


def invoke(*args: str):
    return CliRunner().invoke(app, ["search", *args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_search_chooses_a_configuration_and_runs_it_into_a_stock_checkpoint(tmp_path):
    out = tmp_path / "search"
    args = ["--model", "tiny-llama", "--plugins", "random,magnitude", "--latency-budget", "10s",
            "--ratios", "0.25,0.5", "--output", str(out), *QUICK]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    best = summary["best"]
    assert best["feasible"] and best["milliseconds"] <= 10_000
    assert summary["selectors"] == ["bandit", "optuna"] and summary["pruners"] == ["random", "magnitude"]
    assert summary["evaluations"] > 0 and summary["candidates"] == 4
    for name in ("study.db", "evaluations.jsonl", "batches.jsonl", "search.json", "report.md", "frontier.png"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert {r["key"] for r in records} >= {best["key"]}
    assert f"**{best['key']}**" in (out / "report.md").read_text()

    run = json.loads((out / "best" / "report.json").read_text())
    assert run["plugins"] == [best["plugin"]]
    assert run["config"]["ratios"] == best["ratios"]
    model = AutoModelForCausalLM.from_pretrained(out / "best" / "model")
    assert model.config.intermediate_size == int((1 - best["ratios"]["ffn"]) * 128)

    # the same command resumes: nothing left to measure, the finished run is reused
    again = invoke(*args, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["best"]["key"] == best["key"]
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == len(records)
    assert "finished earlier" in again.stderr

    # another objective is another search: refused in the same study
    changed = invoke(*args, "--objective", "alpha-fair")
    assert_one_line_error(changed, "holds a search with other settings (objective); choose another --output")


def test_an_unreachable_budget_names_the_fastest_configuration_found(tmp_path):
    out = tmp_path / "search"
    result = invoke("--model", "tiny-llama", "--plugins", "random", "--latency-budget", "0.001ms",
                    "--ratios", "0.25,0.5", "--output", str(out), *QUICK)
    assert_one_line_error(result, "no configuration meets the latency budget (0.001 ms per decode step)",
                          "the fastest found is random ffn=0.5 at")
    summary = json.loads((out / "search.json").read_text())
    assert summary["best"] is None and summary["evaluations"] == 0
    assert "random ffn=0.5" in (out / "report.md").read_text()


def test_a_search_without_budget_returns_the_pareto_front(tmp_path):
    out = tmp_path / "search"
    result = invoke("--model", "tiny-llama", "--plugins", "magnitude,optuna", "--ratios", "0.25,0.5",
                    "--output", str(out), "-o", "optuna.sampler=grid", *QUICK, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best"] is None and summary["run"] is None
    assert summary["pareto"] and set(summary["pareto"]) <= {"magnitude ffn=0.25", "magnitude ffn=0.5"}
    assert not (out / "best").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--plugins", "bandit", "--latency-budget", "0.5"], ["a search needs a pruner among --plugins"]),
        (["--plugins", "slicegpt", "--latency-budget", "0.5"], ["slicegpt slices the whole model"]),
        (["--plugins", "random", "--latency-budget", "1.5"], ["--latency-budget '1.5'"]),
        (["--plugins", "random", "--ratios", "0.5:0.1"], ["--ratios '0.5:0.1'"]),
        (["--plugins", "random", "--ratios", "heads=0.5"], ["--ratios names heads, which none of the pruners"]),
        (["--plugins", "random", "--objective", "alpha-fair", "--alpha", "-1"], ["alpha"]),
        (["--plugins", "random", "--batches", "0"], ["batches"]),
        (["--plugins", "nope"], ["unknown plugin 'nope'"]),
        (["--plugins", "random", "-o", "bandit.confidence=2"], ["options.bandit.confidence"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragments):
    assert_one_line_error(invoke("--model", "tiny-llama", "--output", str(tmp_path / "s"), *args), *fragments)
