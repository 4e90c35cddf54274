"""Calibration pruners against ``random`` at equal whole-model parameter reduction, on SmolLM2-135M.

A ratio means different things to different pruners (FFN channels for ``random`` and
``activation``, the hidden width for ``slicegpt``, whose result also carries shortcut matrices and
possibly an untied head), so pruners are compared at the same *whole-model* parameter reduction.
For each target reduction every pruner gets the ratio of its own dimension whose result comes
closest to it, found from the shapes alone before anything is calibrated (``slicegpt``'s
structure is built on the meta device). Each model is then compressed through the hooks
``core run`` calls and measured in memory: WikiText-2 perplexity on the evaluation half (the
perplexity evaluator's default text, windows and length) and, with ``--limit``, the zero-shot
tasks of the benchmark data. Prints one table and writes everything as JSON.

    .venv/bin/python bench/calibration_quality.py --targets 0.15 -o count=16
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
import yaml  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from prunekit.config import RunConfig  # noqa: E402
from prunekit.data import shared_data_dir, token_stream  # noqa: E402
from prunekit.manager import get_plugins  # noqa: E402
from prunekit.models import load_model  # noqa: E402
from prunekit.output import package_versions  # noqa: E402
from prunekit.payloads import Dimension, ScoreRequest, SliceRequest  # noqa: E402
from prunekit.pipeline import count_parameters  # noqa: E402
from prunekit.plugins.evaluators import perplexity, zeroshot  # noqa: E402
from prunekit.plugins.slicegpt import SliceGPTOptions, keeps_full_ends  # noqa: E402
from prunekit.plugins.slicegpt.fusion import head_is_tied, untie_head  # noqa: E402
from prunekit.plugins.slicegpt.layouts import layout_for  # noqa: E402
from prunekit.plugins.slicegpt.rotation import sliced_width  # noqa: E402
from prunekit.plugins.slicegpt.structure import restore  # noqa: E402
from prunekit.slicing import keep_plan, kept_units  # noqa: E402

PRUNERS = {  # name in the table -> (plugin, its options)
    "random": ("random", {}),
    "activation": ("activation", {}),
    "slicegpt": ("slicegpt", {}),
    "slicegpt-single": ("slicegpt", {"rotation": "single"}),
}
CALIBRATING = ("activation", "slicegpt")


def ffn_ratio(base, target: float) -> float:
    """The FFN ratio whose uniform slice removes the share of parameters closest to ``target``."""
    architecture = get_plugins().hooks([]).architecture_for(base)
    layers = list(architecture.layers(base))
    layer = layers[0]
    units = architecture.units(layer, Dimension.FFN)
    per_unit = sum(layer.get_submodule(p).weight.shape[1] + (layer.get_submodule(p).bias is not None)
                   for p in architecture.ffn_inputs)
    per_unit += architecture.output_projection(layer, Dimension.FFN).weight.shape[0]
    removed = round(target * count_parameters(base) / (per_unit * len(layers)))
    kept = min(units, max(1, units - removed))
    ratio = (units - kept - 0.5) / units if kept < units else 0.0  # int((1 - r) * units) == kept
    assert kept_units(units, ratio) == kept
    return ratio


def slicegpt_parameters(base, width: int, options: SliceGPTOptions) -> int:
    """Parameters of ``base`` sliced by slicegpt to ``width``, from shapes alone (meta device)."""
    with torch.device("meta"):
        dry = AutoModelForCausalLM.from_config(copy.deepcopy(base.config))
    layout = layout_for(dry)
    source = dry.get_submodule(layout.embeddings[0]).weight.shape[1]
    full_ends = keeps_full_ends(options, dry, layout, source, width)
    if not full_ends and head_is_tied(dry, layout):
        untie_head(dry, layout)
    restore(dry, {"family": layout.name, "hidden_size": width, "source_hidden_size": source,
                  "shortcuts": options.rotation == "per_layer", "rms_norms": layout.layernorm,
                  "added_biases": [], "full_ends": full_ends})
    return count_parameters(dry)


def hidden_ratio(base, target: float, options: SliceGPTOptions) -> float:
    """The hidden ratio (a multiple-of-8 width) whose result is closest to ``target`` reduction."""
    source = base.config.hidden_size
    widths = range(options.multiple_of, source + 1, options.multiple_of)
    before = count_parameters(base)
    width = min(widths, key=lambda w: abs(1 - slicegpt_parameters(base, w, options) / before - target))
    ratio = 1 - (width + options.multiple_of / 2) / source  # floors to ``width``
    assert sliced_width(source, ratio, options.multiple_of) == width
    return ratio


def compress(base, tokenizer, name: str, target: float, seed: int, calibration: dict) -> tuple[torch.nn.Module, dict]:
    """A compressed copy of ``base`` at the ratio matching ``target``, through the hooks of ``core run``."""
    plugin, options = PRUNERS[name]
    options = {**options, **(calibration if plugin in CALIBRATING else {})}
    plugins = get_plugins()
    hooks = plugins.hooks([plugin])
    if plugin == "slicegpt":
        ratio = hidden_ratio(base, target, SliceGPTOptions.model_validate(options))
    else:
        ratio = ffn_ratio(base, target)
    config = plugins.resolve_options(RunConfig(model="bench", plugins=[plugin], ratio=ratio, seed=seed,
                                               options={plugin: options}))
    model = copy.deepcopy(base)
    architecture = hooks.architecture_for(model)
    request = ScoreRequest(model, architecture, config, tokenizer=tokenizer)
    start = time.perf_counter()
    if hooks.model_slicers():
        report = hooks.slice_model(request).report
    else:
        importances = hooks.score_importance(request)
        for index, keep in enumerate(keep_plan(importances, ratio, architecture, model)):
            hooks.slice_layer(SliceRequest(model, architecture, index, keep))
        architecture.sync_config(model)
        report = importances[0].report
    facts = {"ratio": round(ratio, 4), "compression_seconds": round(time.perf_counter() - start, 1),
             "params": count_parameters(model)}
    if "calibration" in report:
        facts["calibration"] = report["calibration"]
    if plugin == "slicegpt":
        facts["hidden_size"] = report["hidden_size"]["after"]
        facts["embeddings"] = report["embeddings"]
    return model, facts


def measure(model, tokenizer, stream, length: int, tasks: list[str], limit: int) -> dict:
    ppl = perplexity.measure(model, stream, length=length, windows_count=perplexity.PerplexityOptions().windows)
    result = {"perplexity": ppl.perplexity, "loss": ppl.loss}
    if limit:
        scores = zeroshot.score_tasks(model, tokenizer, tasks, limit=limit)
        primary = {task: scores.tasks[task][metric] for task, metric in sorted(scores.primary_metric.items())
                   if task in scores.tasks and not task.startswith("zeroshot")}
        result.update(tasks=primary, average=statistics.fmean(primary.values()))
    return result


def table(results: dict) -> str:
    dense = results["dense"]
    header = ["target -%", "pruner", "ratio", "params -%", "compress s", "ppl"] + (["avg"] if "average" in dense else [])
    rows = [["0", "dense", "", "0.0", "", f"{dense['perplexity']:.2f}"]
            + ([f"{dense['average']:.3f}"] if "average" in dense else [])]
    for run in results["runs"]:
        reduction = 100 * (1 - run["params"] / results["params_dense"])
        rows.append([f"{100 * run['target']:g}", run["pruner"], f"{run['ratio']:g}", f"{reduction:.1f}",
                     f"{run['compression_seconds']:.0f}", f"{run['perplexity']:.2f}"]
                    + ([f"{run['average']:.3f}"] if "average" in run else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--targets", type=lambda s: [float(x) for x in s.split(",")], default=[0.1, 0.15, 0.2],
                        help="whole-model parameter reductions to compare at (default 0.1,0.15,0.2)")
    parser.add_argument("--pruners", type=lambda s: s.split(","), default=list(PRUNERS))
    parser.add_argument("--limit", type=int, default=0, help="examples per zero-shot task (default 0: perplexity only)")
    parser.add_argument("-o", "--calibration", action="append", default=[],
                        help="calibration setting KEY=VALUE for activation and slicegpt, e.g. count=16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("bench/results/calibration_quality.json"))
    args = parser.parse_args()
    calibration = {key: yaml.safe_load(value) for key, _, value in (o.partition("=") for o in args.calibration)}

    data = shared_data_dir()
    if data is None:
        raise SystemExit("benchmark data not found: set PRUNEKIT_DATA or run from the checkout beside ../shared/data")
    tasks = [f"local:{data / 'tasks'}"]
    loaded = load_model(args.model)
    base, tokenizer = loaded.model, loaded.tokenizer
    length = perplexity.window_length(base, None)
    stream = token_stream(tokenizer, perplexity.default_source())
    started = time.perf_counter()
    results: dict = {
        "model": args.model, "limit": args.limit, "seed": args.seed, "calibration": calibration,
        "perplexity": {"source": perplexity.default_source(), "length": length,
                       "windows": perplexity.PerplexityOptions().windows},
        "params_dense": count_parameters(base), "versions": package_versions(),
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform()},
        "runs": [],
    }
    results["dense"] = measure(base, tokenizer, stream, length, tasks, args.limit)
    print(f"dense: ppl {results['dense']['perplexity']:.2f}", flush=True)
    for target in args.targets:
        for name in args.pruners:
            model, facts = compress(base, tokenizer, name, target, args.seed, calibration)
            quality = measure(model, tokenizer, stream, length, tasks, args.limit)
            results["runs"].append({"target": target, "pruner": name, **facts, **quality})
            print(f"{target:g} {name}: ratio {facts['ratio']:g}, params {facts['params']:,}, "
                  f"ppl {quality['perplexity']:.2f}, {facts['compression_seconds']:.0f} s", flush=True)
            del model
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(results, indent=2) + "\n")  # after every run
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
