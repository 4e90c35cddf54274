"""The zero-shot evaluator: lm-eval's own numbers on the in-memory model, from any task folder."""

from __future__ import annotations

import json
import math
import random
import statistics
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prunekit.cli import app
from prunekit.errors import UsageError
from prunekit.plugins.evaluators.zeroshot import score_tasks
from prunekit.plugins.models.tiny import tokenizer
from test_cli import assert_one_line_error

runner = CliRunner()
FIVE = ("piqa_local", "winogrande_local", "hellaswag_local", "arc_easy_local", "arc_challenge_local")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def plain_lm_eval(model, tasks, folder, limit):
    """lm-eval as its users call it, from the task folder so its relative data_files resolve."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer(), batch_size=8),
        tasks=tasks,
        limit=limit,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
    )


def eval_json(*args):
    result = runner.invoke(app, ["eval", "--model", "tiny-llama", "--plugins", "zeroshot", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["metrics"]


def test_scores_equal_a_plain_lm_eval_call_on_the_benchmark_tasks(shared_data, tiny_model, monkeypatch, tmp_path):
    import lm_eval

    folder = shared_data / "tasks"
    monkeypatch.chdir(tmp_path)  # anywhere but the task folder
    ours = eval_json("--tasks", f"local:{folder}", "--limit", "4")
    monkeypatch.chdir(folder)
    plain = plain_lm_eval(tiny_model("llama"), ["zeroshot_local"], folder, 4)

    assert set(ours["tasks"]) == set(FIVE)
    for task in FIVE:
        expected = {key.split(",")[0]: value for key, value in plain["results"][task].items()
                    if key in ("acc,none", "acc_norm,none")}
        assert ours["tasks"][task] == expected
    assert ours["primary_metric"] == {
        "piqa_local": "acc_norm", "hellaswag_local": "acc_norm", "arc_easy_local": "acc_norm",
        "arc_challenge_local": "acc_norm", "winogrande_local": "acc",
    }
    details = ours["details"]["zeroshot"]
    assert details["lm_eval_version"] == lm_eval.__version__
    assert details["task_versions"] == {task: plain["versions"][task] for task in FIVE}
    assert details["examples"] == dict.fromkeys(FIVE, 4) and details["limit"] == 4
    assert details["shots"] == dict.fromkeys(FIVE, 0)
    assert details["chance"] == {"piqa_local": 0.5, "winogrande_local": 0.5, "hellaswag_local": 0.25,
                                 "arc_easy_local": 0.25, "arc_challenge_local": 0.25}


@pytest.fixture
def suite(tmp_path):
    """A task folder as users write them: configs in subfolders, data paths relative to each
    config, a ``!function`` helper beside its config, and a group over the tasks."""
    root = tmp_path / "suite"
    (root / "qa" / "data").mkdir(parents=True)
    questions = [("Is fire hot?", ["yes", "no"], 0), ("Is ice hot?", ["yes", "no"], 1),
                 ("Two plus two is", ["four", "five", "six"], 0), ("The sky is", ["green", "blue"], 1),
                 ("Cats are", ["animals", "rocks"], 0), ("Water is", ["dry", "wet"], 1)]
    (root / "qa" / "data" / "qa.jsonl").write_text(
        "".join(json.dumps({"question": q, "choices": c, "label": a}) + "\n" for q, c, a in questions))
    (root / "qa" / "helpers.py").write_text(textwrap.dedent('''
        def shout(dataset):
            return dataset.map(lambda doc: {"question": doc["question"].upper()})
    '''))
    (root / "qa" / "qa.yaml").write_text(textwrap.dedent('''
        task: qa_local
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: data/qa.jsonl
        test_split: test
        output_type: multiple_choice
        process_docs: !function helpers.shout
        doc_to_text: "Q: {{question}}\\nA:"
        doc_to_choice: "{{choices}}"
        doc_to_target: label
        metric_list:
          - metric: acc
        metadata:
          version: 2.0
    '''))
    (root / "facts.jsonl").write_text("".join(json.dumps({"text": f"fact {i}", "label": i % 2}) + "\n" for i in range(5)))
    (root / "facts.yaml").write_text(textwrap.dedent('''
        task: facts_local
        dataset_path: json
        dataset_kwargs:
          data_files: [facts.jsonl]
        test_split: train
        output_type: multiple_choice
        doc_to_text: "{{text}} is"
        doc_to_choice: ["true", "false"]
        doc_to_target: label
        metric_list:
          - metric: acc
          - metric: acc_norm
    '''))
    (root / "suite.yaml").write_text("group: my_suite\ntask: [qa_local, facts_local]\n")
    return root


def test_any_task_folder_with_relative_data_files_works_from_anywhere(suite, tiny_model, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    everything = eval_json("--tasks", f"local:{suite}")
    assert set(everything["tasks"]) == {"qa_local", "facts_local"}
    assert everything["details"]["zeroshot"]["examples"] == {"qa_local": 6, "facts_local": 5}
    assert everything["details"]["zeroshot"]["task_versions"]["qa_local"] == 2.0
    assert everything["primary_metric"] == {"qa_local": "acc", "facts_local": "acc_norm"}
    by_group = eval_json("--tasks", f"my_suite,local:{suite}")
    assert by_group["tasks"] == everything["tasks"]
    one = eval_json("--tasks", f"qa_local,local:{suite}", "--limit", "3")
    assert set(one["tasks"]) == {"qa_local"} and one["details"]["zeroshot"]["examples"] == {"qa_local": 3}

    monkeypatch.chdir(suite / "qa")  # where lm-eval itself can resolve this config's data path
    plain = plain_lm_eval(tiny_model("llama"), ["qa_local"], suite / "qa", None)
    assert everything["tasks"]["qa_local"]["acc"] == plain["results"]["qa_local"]["acc,none"]


def test_a_random_subset_is_seeded_and_leaves_global_random_state_alone(suite, tiny_model):
    model = tiny_model("llama")
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    first = score_tasks(model, tokenizer(), [f"local:{suite}"], sample=3, seed=5)
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())
    again = score_tasks(model, tokenizer(), [f"local:{suite}"], sample=3, seed=5)
    assert first.tasks == again.tasks and first.examples == {"qa_local": 3, "facts_local": 3}
    assert first.average == pytest.approx((first.tasks["qa_local"]["acc"] + first.tasks["facts_local"]["acc_norm"]) / 2)
    with pytest.raises(UsageError, match="either limit or sample"):
        score_tasks(model, tokenizer(), [f"local:{suite}"], limit=2, sample=2)


def test_the_evaluator_samples_examples_with_the_run_seed(suite, tiny_model):
    """``options.zeroshot.sample``, as a search measures its evaluation batches: ``score_tasks``'s sample."""
    from prunekit.config import RunConfig
    from prunekit.manager import get_plugins
    from prunekit.payloads import EvalRequest

    model = tiny_model("llama")
    config = RunConfig(model="tiny-llama", tasks=[f"local:{suite}"], seed=5, options={"zeroshot": {"sample": 3}})
    metrics = get_plugins().hooks([]).evaluate_one("zeroshot", EvalRequest(model, tokenizer(), config, "after"))
    direct = score_tasks(model, tokenizer(), [f"local:{suite}"], sample=3, seed=5)
    assert metrics.tasks == direct.tasks and metrics.primary_metric == direct.primary_metric
    assert metrics.details["zeroshot"]["sample"] == 3 and metrics.details["zeroshot"]["sample_seed"] == 5


CHOICES = [2, 4, 4, 2, 4, 4, 2, 2, 4, 4]
"""The number of choices of each example of ``mix_local``: chance 0.35 on all, 1/3 on the first 3."""


@pytest.fixture
def mixed(tmp_path):
    """Tasks whose examples have 2 or 4 choices (``mix_local``), or always 2 (``pair_local``, 2 examples), and a
    group of both."""
    root = tmp_path / "mixed"
    root.mkdir()
    options = ["alpha", "beta", "gamma", "delta"]
    (root / "mix.jsonl").write_text("".join(json.dumps({"question": f"q{i}", "choices": options[:k], "label": 0}) + "\n"
                                            for i, k in enumerate(CHOICES)))
    (root / "pair.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": 1}) + "\n" for i in range(2)))
    common = "dataset_path: json\noutput_type: multiple_choice\ntest_split: train\ndoc_to_target: label\n"
    (root / "mix.yaml").write_text("task: mix_local\ndataset_kwargs:\n  data_files: [mix.jsonl]\n" + common +
                                   'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n')
    (root / "pair.yaml").write_text("task: pair_local\ndataset_kwargs:\n  data_files: [pair.jsonl]\n" + common +
                                    'doc_to_text: "{{text}} is"\ndoc_to_choice: ["true", "false"]\n')
    (root / "group.yaml").write_text("group: mixed_suite\ntask: [mix_local, pair_local]\n")
    return root


def test_chance_is_the_mean_of_one_over_the_choices_of_the_examples_scored(mixed):
    from prunekit.plugins.evaluators.zeroshot import chance_level, resolve_tasks

    manager, names = resolve_tasks(["mix_local", f"local:{mixed}"])
    task = manager.load(names)["tasks"]["mix_local"]
    assert chance_level(task) == pytest.approx(0.35)
    assert chance_level(task, limit=3) == pytest.approx((1 / 2 + 1 / 4 + 1 / 4) / 3)
    assert chance_level(task, indices=[0, 3, 4]) == pytest.approx((1 / 2 + 1 / 2 + 1 / 4) / 3)


def test_the_evaluator_records_chance_and_the_averages_stderr_under_limit_and_sample(mixed, tiny_model):
    limited = eval_json("--tasks", f"mixed_suite,local:{mixed}", "--limit", "3")
    details = limited["details"]["zeroshot"]
    mix = (1 / 2 + 1 / 4 + 1 / 4) / 3
    assert details["examples"] == {"mix_local": 3, "pair_local": 2}
    assert details["chance"] == pytest.approx({"mix_local": mix, "pair_local": 0.5})
    errors = [details["stderr"][task][metric] for task, metric in limited["primary_metric"].items()]
    assert details["average_stderr"] == pytest.approx(math.sqrt(sum(e**2 for e in errors)) / len(errors))

    sampled = score_tasks(tiny_model("llama"), tokenizer(), ["mix_local", "pair_local", f"local:{mixed}"],
                          sample=5, seed=8)
    drawn = sorted(random.Random(8).sample(range(len(CHOICES)), 5))  # as score_tasks draws, mix_local first
    assert sampled.chance == pytest.approx({"mix_local": statistics.fmean(1 / CHOICES[i] for i in drawn),
                                            "pair_local": 0.5})
    assert sampled.chance["mix_local"] == pytest.approx(0.4)  # neither the first 5's nor the whole task's 0.35


def test_lm_eval_request_bars_follow_prunekit_bars(suite, tiny_model, capfd, monkeypatch):
    from prunekit.plugins.evaluators import zeroshot

    model = tiny_model("llama")
    score_tasks(model, tokenizer(), [f"local:{suite}"], limit=2)  # bars hidden: PRUNEKIT_NO_PROGRESS
    assert "loglikelihood requests" not in capfd.readouterr().err
    monkeypatch.setattr(zeroshot, "bars_hidden", lambda: False)
    score_tasks(model, tokenizer(), [f"local:{suite}"], limit=2)
    assert "loglikelihood requests" in capfd.readouterr().err


def test_bad_task_input_is_a_one_line_error(suite, tmp_path):
    def invoke(tasks):
        return runner.invoke(app, ["eval", "--model", "tiny-llama", "--plugins", "zeroshot", "--tasks", tasks])

    assert_one_line_error(invoke(f"local:{tmp_path / 'missing'}"), "task folder not found:", "missing")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke(f"local:{tmp_path / 'empty'}"), "no lm-eval task configs found in", "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "b.yaml").write_text("task: broken_local\ndataset_path: json\ndataset_kwargs:\n  data_files: gone.jsonl\n"
                                   "output_type: multiple_choice\ntest_split: train\n")
    assert_one_line_error(invoke(f"local:{broken}"), "cannot load lm-eval tasks broken_local:")
    assert_one_line_error(invoke(f"no_such_task_anywhere,local:{suite}"),
                          "unknown lm-eval task 'no_such_task_anywhere' (nor in", "suite")


@pytest.mark.slow
def test_smollm2_scores_the_five_benchmark_tasks(shared_data):
    result = runner.invoke(app, ["eval", "--model", "smollm2-135m", "--plugins", "zeroshot",
                                 "--tasks", f"local:{shared_data / 'tasks'}", "--limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert set(metrics["tasks"]) == set(FIVE)
    assert all(0 <= metrics["tasks"][task]["acc"] <= 1 for task in FIVE)
