"""PruneNet against ``random`` and ``magnitude`` on SmolLM2-135M: quality, compression time, size.

For each ratio and pruner the model is scored and sliced exactly as ``core run`` does (the
pruner's ``score_importance`` hook, the core's keep plan, ``slice_layer`` per layer and the config
rewrite), then measured in memory with the built-in evaluators' library functions: WikiText-2
perplexity (``perplexity.measure``, the evaluator's default text and windows) and the five
zero-shot tasks of the benchmark data (``zeroshot.score_tasks`` with lm-eval, ``--limit``
examples per task; each task's primary metric, acc_norm except WinoGrande's acc). Prints one
table and writes everything as JSON.

PruneNet's policy is trained once at ``--train-ratio`` (cached under ``$PRUNEKIT_CACHE/policies``,
so a repeated bench reuses it) and applied at every ratio; the row where it was trained reports
the training in its compression time, the others only the scoring with a learned policy.

    .venv/bin/python bench/prunenet_quality.py --limit 50
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from prunekit.config import RunConfig  # noqa: E402
from prunekit.data import shared_data_dir, token_stream  # noqa: E402
from prunekit.manager import get_plugins  # noqa: E402
from prunekit.models import load_model  # noqa: E402
from prunekit.output import package_versions  # noqa: E402
from prunekit.payloads import ScoreRequest, SliceRequest  # noqa: E402
from prunekit.pipeline import count_parameters  # noqa: E402
from prunekit.plugins.evaluators import perplexity, zeroshot  # noqa: E402
from prunekit.slicing import keep_plan  # noqa: E402

MODEL = "smollm2-135m"
PRUNERS = ("prunenet", "random", "magnitude")
RATIOS = (0.1, 0.2, 0.3, 0.5)


def measure(model, tokenizer, stream, length: int, tasks: list[str], limit: int) -> dict:
    """Perplexity, each task's primary metric and their mean (the papers' zero-shot average)."""
    start = time.perf_counter()
    ppl = perplexity.measure(model, stream, length=length, windows_count=perplexity.PerplexityOptions().windows)
    scores = zeroshot.score_tasks(model, tokenizer, tasks, limit=limit)
    primary = {task: scores.tasks[task][metric] for task, metric in sorted(scores.primary_metric.items())
               if task in scores.tasks and not task.startswith("zeroshot")}
    return {
        "perplexity": ppl.perplexity,
        "loss": ppl.loss,
        "tasks": primary,
        "metrics": {task: scores.primary_metric[task] for task in primary},
        "average": statistics.fmean(primary.values()),
        "stderr": {task: scores.stderr.get(task, {}).get(scores.primary_metric[task]) for task in primary},
        "examples": scores.examples,
        "seconds": round(time.perf_counter() - start, 1),
    }


def compress(base, pruner: str, ratio: float, seed: int, train_ratio: float) -> tuple[torch.nn.Module, dict]:
    """A sliced copy of ``base`` and what it cost, through the same hooks ``core run`` calls."""
    plugins = get_plugins()
    options = {"prunenet": {"train_ratio": train_ratio}} if pruner == "prunenet" else {}
    config = plugins.resolve_options(RunConfig(model=MODEL, plugins=[pruner], ratio=ratio, seed=seed, options=options))
    hooks = plugins.hooks([pruner])
    model = copy.deepcopy(base)
    architecture = hooks.architecture_for(model)
    start = time.perf_counter()
    importances = hooks.score_importance(ScoreRequest(model, architecture, config))
    scored = time.perf_counter()
    for index, keep in enumerate(keep_plan(importances, ratio, architecture, model)):
        hooks.slice_layer(SliceRequest(model, architecture, index, keep))
    architecture.sync_config(model)
    done = time.perf_counter()
    report = importances[0].report
    facts = {"score_seconds": round(scored - start, 2), "slice_seconds": round(done - scored, 2),
             "compression_seconds": round(done - start, 2), "params": count_parameters(model)}
    if pruner == "prunenet":
        facts["policy"] = report["policy"]
        facts["learning_curve"] = report["learning_curve"]
        facts["best_episode"] = report["best_episode"]
    if "ks_statistic" in report:
        facts["ks_mean"] = report["ks_statistic"]["mean"]
    return model, facts


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def table(results: dict) -> str:
    dense = results["dense"]
    task_names = list(dense["tasks"])
    header = ["ratio", "pruner", "params -%", "compress s", "ppl"] + task_names + ["avg"]
    rows = [["0", "dense", "0.0", "", f"{dense['perplexity']:.2f}"]
            + [f"{dense['tasks'][t]:.3f}" for t in task_names] + [f"{dense['average']:.3f}"]]
    for run in results["runs"]:
        reduction = 100 * (1 - run["params"] / results["params_dense"])
        rows.append([f"{run['ratio']:g}", run["pruner"], f"{reduction:.1f}", f"{run['compression_seconds']:.1f}",
                     f"{run['perplexity']:.2f}"] + [f"{run['tasks'][t]:.3f}" for t in task_names]
                    + [f"{run['average']:.3f}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=50, help="examples per zero-shot task (default 50)")
    parser.add_argument("--ratios", type=lambda s: [float(x) for x in s.split(",")], default=list(RATIOS))
    parser.add_argument("--pruners", type=lambda s: s.split(","), default=list(PRUNERS))
    parser.add_argument("--train-ratio", type=float, default=0.3, help="ratio PruneNet's policy is trained at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default torch's); 1 is faster on a CPU shared with other jobs")
    parser.add_argument("--output", type=Path, default=Path("bench/results/prunenet_quality.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = shared_data_dir()
    if data is None:
        raise SystemExit("benchmark data not found: set PRUNEKIT_DATA or run from the checkout beside ../shared/data")
    tasks = [f"local:{data / 'tasks'}"]
    loaded = load_model(MODEL)
    base, tokenizer = loaded.model, loaded.tokenizer
    length = perplexity.window_length(base, None)
    stream = token_stream(tokenizer, perplexity.default_source())

    started = time.perf_counter()
    results: dict = {
        "model": MODEL, "limit": args.limit, "seed": args.seed, "train_ratio": args.train_ratio,
        "perplexity": {"source": perplexity.default_source(), "length": length,
                       "windows": perplexity.PerplexityOptions().windows},
        "params_dense": count_parameters(base), "versions": package_versions(),
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform()},
        "runs": [],
    }
    print(f"dense: measuring (limit {args.limit} per task)", flush=True)
    results["dense"] = measure(base, tokenizer, stream, length, tasks, args.limit)
    for ratio in args.ratios:
        for pruner in args.pruners:
            model, facts = compress(base, pruner, ratio, args.seed, args.train_ratio)
            quality = measure(model, tokenizer, stream, length, tasks, args.limit)
            results["runs"].append({"ratio": ratio, "pruner": pruner, **facts, **quality})
            print(f"r={ratio:g} {pruner}: ppl {quality['perplexity']:.2f}, avg {quality['average']:.3f}, "
                  f"compression {facts['compression_seconds']:.1f} s", flush=True)
            del model
            write(results, args.output)  # after every run, so an interrupted bench keeps what it measured
    results["seconds"] = round(time.perf_counter() - started, 1)
    write(results, args.output)
    print()
    print(table(results))
    print(f"\n{len(results['runs'])} runs in {results['seconds'] / 60:.1f} min; JSON: {args.output}")


if __name__ == "__main__":
    main()
