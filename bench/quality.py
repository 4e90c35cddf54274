"""What every pipeline costs in quality on a built-in real model: pruners x ratios x recoveries,
each trained row beside its control.

Each row is one pipeline as ``core run`` runs it, through the same hooks and the same code: the
pruner's ``score_importance`` (or ``slice_model``), the core's keep plan and ``slice_layer`` with
the uncompressed layers recorded, then the recovery chain through ``prunekit.pipeline.recover``
(``refit``, ``lora`` or ``refit`` then ``lora``). Calibration and training read their default
text, the OpenStax excerpt shipped with prunekit; evaluation reads WikiText-2, which shares no
13-gram with it. Every model is measured in memory with the built-in evaluators' library
functions: perplexity, bits per byte and word perplexity on the evaluator's default text and
windows (every row), and, on the rows ``--full`` names (and the dense model), the whole
evaluation half and the five zero-shot tasks of the benchmark data at ``--limit`` examples each
(each task's primary metric with its standard error and chance level; acc_norm, acc for
WinoGrande), with above-chance retention ``(acc − chance) / (acc_dense − chance)`` ± its
standard error.

**Controls.** A recovery that trains on text (``lora``) also adapts the model to that text, and
that gain is not recovery from compression. So for each such recovery the uncompressed model is
put through the same recovery with the same tokens (the ``dense`` rows at ratio 0), and every
trained row is shown against both the untrained dense model and that control. ``refit`` solves a
least-squares problem per sliced layer and leaves an unsliced model as it is, so ``refit,lora``
shares ``lora``'s control.

FFN pruners slice the FFN at each ``--ratios`` value; ``slicegpt``, which slices the hidden width,
is run at the hidden ratio whose whole-model parameter reduction is closest to that of the FFN
ratio (from shapes alone), so every row of a ratio removes about as many parameters. Randomized
pruners (``random``, ``prunenet``) run at every ``--seeds`` value; the table shows their median
and range. Rows are written to the JSON as they finish, and a rerun with the same settings skips
the rows already there, so an interrupted bench loses at most one row; a row ``--full`` names
that lacks its full measurement is measured again.

    .venv/bin/python bench/quality.py --model smollm2-135m
    .venv/bin/python bench/quality.py --model smollm2-135m --full activation,refit,lora@0.3 --full dense,lora@0
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from prunekit import files, pipeline  # noqa: E402
from prunekit.config import RunConfig, parse_option  # noqa: E402
from prunekit.chance import above_chance_retention, average_stderr  # noqa: E402
from prunekit.plugins.data import shared_data_dir, token_stream, token_units, training_text  # noqa: E402
from prunekit.manager import get_plugins  # noqa: E402
from prunekit.models import load_model  # noqa: E402
from prunekit.output import package_versions  # noqa: E402
from prunekit.payloads import Dimension, RecoverRequest, ScoreRequest  # noqa: E402
from prunekit.pipeline import count_parameters  # noqa: E402
from prunekit.plugins.evaluators import perplexity, zeroshot  # noqa: E402
from prunekit.plugins.slicegpt import SliceGPTOptions  # noqa: E402
from prunekit.plugins.slicegpt.compress import keeps_full_ends  # noqa: E402
from prunekit.plugins.slicegpt.fusion import head_is_tied, untie_head  # noqa: E402
from prunekit.plugins.slicegpt.layouts import layout_for  # noqa: E402
from prunekit.plugins.slicegpt.rotation import sliced_width  # noqa: E402
from prunekit.plugins.slicegpt.structure import restore  # noqa: E402
from prunekit.slicing import kept_units  # noqa: E402
from prunekit.uncompressed import UncompressedLayers  # noqa: E402

PRUNERS = ("dense", "random", "prunenet", "prunenet-each", "magnitude", "activation", "slicegpt")
"""``dense`` slices nothing: the control rows. ``prunenet-each`` is ``prunenet`` with a policy trained
at the row's ratio, where ``prunenet`` trains once (at the first ratio it runs) and reuses that policy
at every ratio."""
DEFAULT_PRUNERS = ("random", "prunenet", "magnitude", "activation", "slicegpt")
RANDOMIZED = ("random", "prunenet", "prunenet-each")
RECOVERIES = ("none", "refit", "lora", "refit+lora")
"""The default recovery chains: ``+`` between steps, each step a recovery plugin with any options in brackets,
``;`` between them (``refit+distill[tokens=30720;learning_rate=3e-4]``)."""
RECOVERY_PLUGINS = ("refit", "lora", "distill")
TRAINED = ("lora", "distill")
"""The recovery plugins that train on text, so need a control (``distill``'s is a check: the uncompressed model
distilled from itself stays as it was)."""
RATIOS = (0.3, 0.5)
STEP = re.compile(r"^(\w+)(?:\[([^\]]*)\])?$")


def recovery_steps(recovery: str) -> list[str]:
    """The steps of a recovery chain, options included; ``none`` has none."""
    return [] if recovery == "none" else recovery.split("+")


def step_options(step: str) -> tuple[str, dict]:
    """``distill[tokens=30720;lora=true]`` as ``("distill", {"tokens": 30720, "lora": True})``."""
    match = STEP.match(step)
    if match is None or match[1] not in RECOVERY_PLUGINS:
        raise SystemExit(f"unknown recovery step {step!r}: one of {', '.join(RECOVERY_PLUGINS)}, options in brackets")
    options = [parse_option(f"{match[1]}.{item}") for item in (match[2] or "").split(";") if item]
    return match[1], {field: value for _, field, value in options}


def control(recovery: str) -> str | None:
    """The recovery the uncompressed model goes through as the control of ``recovery``: its text-trained steps
    (``refit`` leaves an unsliced model as it is), or ``None`` where nothing trains on text."""
    trained = [step for step in recovery_steps(recovery) if step_options(step)[0] in TRAINED]
    return "+".join(trained) or None


def ffn_reduction(base, ratio: float) -> float:
    """The whole-model parameter reduction of slicing the FFN of ``base`` at ``ratio``."""
    architecture = get_plugins().hooks([]).architecture_for(base)
    layers = list(architecture.layers(base))
    layer = layers[0]
    units = architecture.units(layer, Dimension.FFN)
    per_unit = sum(layer.get_submodule(p).weight.shape[1] + (layer.get_submodule(p).bias is not None)
                   for p in architecture.ffn_inputs)
    per_unit += architecture.output_projection(layer, Dimension.FFN).weight.shape[0]
    removed = (units - kept_units(units, ratio)) * per_unit * len(layers)
    return removed / count_parameters(base)


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


def compress(base, tokenizer, pruner: str, ffn_ratio: float, seed: int, uncompressed: UncompressedLayers):
    """A sliced copy of ``base`` with its layers recorded in ``uncompressed`` (unless slicegpt
    slices it), and its facts."""
    if pruner == "dense":
        model = copy.deepcopy(base)
        return model, get_plugins().hooks([]).architecture_for(model), {"params": count_parameters(model)}
    plugin, options = ("prunenet", {"train_ratio": ffn_ratio}) if pruner == "prunenet-each" else (pruner, {})
    plugins = get_plugins()
    hooks = plugins.hooks([plugin])
    ratio = ffn_ratio
    if plugin == "slicegpt":
        ratio = hidden_ratio(base, ffn_reduction(base, ffn_ratio), SliceGPTOptions())
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
        pipeline.slice_by_importance(importances, config, model, architecture, hooks, uncompressed)
        report = importances[0].report
    facts = {"pruner_ratio": round(ratio, 4), "compression_seconds": round(time.perf_counter() - start, 1),
             "params": count_parameters(model)}
    if plugin == "prunenet":
        facts["selection"] = report["selection"]
        facts["optimizer_steps"] = report["optimizer_steps"]
        facts["train_ratio"] = report["policy"]["train_ratio"]
    return model, architecture, facts


def recover(model, tokenizer, architecture, uncompressed, chain: list[str], seed: int, work: Path, source: str):
    """``model`` (changed in place or replaced) after the recovery ``chain`` (steps with their options), and its
    steps; ``source`` is the ``--model`` the uncompressed model was loaded from (``distill``'s teacher)."""
    plugins = get_plugins()
    names = [step_options(step)[0] for step in chain]
    hooks = plugins.hooks(names)
    options = dict(step_options(step) for step in chain)
    config = plugins.resolve_options(pipeline.with_evaluator_options(
        RunConfig(model=source, plugins=names, seed=seed, options=options), hooks.evaluators()))
    request = RecoverRequest(model, tokenizer, architecture, config, work_dir=work / "checkpoints", output_dir=work,
                             uncompressed=uncompressed)
    model, steps = pipeline.recover(hooks, names, request)
    return model, [step.model_dump(mode="json", exclude={"report"}) | {"report": summary(step.report)}
                   for step in steps]


def summary(report: dict | None) -> dict | None:
    """A step's report without its per-layer and per-step detail, which the table does not use."""
    if report is None:
        return None
    return {key: value for key, value in report.items() if key not in ("per_layer", "train_loss")}


def measure(model, tokenizer, text: tuple, tasks: list[str], limit: int) -> dict:
    """Perplexity, bits per byte and word perplexity on the default windows; with ``limit``, also on the whole
    evaluation half, and each task's primary metric with its standard error and chance level, and their mean."""
    start = time.perf_counter()
    stream, units, length = text
    prefix = perplexity.prefix_token(tokenizer)
    default = perplexity.measure(model, stream, prefix=prefix, length=length, units=units,
                                 windows_count=perplexity.PerplexityOptions().windows)
    result: dict = {"perplexity": default.perplexity, "loss": default.loss, "bits_per_byte": default.bits_per_byte,
                    "word_perplexity": default.word_perplexity}
    if limit:
        whole = perplexity.measure(model, stream, prefix=prefix, length=length, units=units, windows_count=None)
        result["whole"] = {"perplexity": whole.perplexity, "bits_per_byte": whole.bits_per_byte,
                           "word_perplexity": whole.word_perplexity, "tokens": whole.tokens, "bytes": whole.bytes}
        scores = zeroshot.score_tasks(model, tokenizer, tasks, limit=limit)
        primary = {task: metric for task, metric in sorted(scores.primary_metric.items())
                   if task in scores.tasks and not task.startswith("zeroshot")}
        result["tasks"] = {task: scores.tasks[task][metric] for task, metric in primary.items()}
        result["stderr"] = {task: scores.stderr.get(task, {}).get(metric) for task, metric in primary.items()}
        result["chance"] = {task: scores.chance[task] for task in primary}
        result["metrics"] = primary
        result["average"] = statistics.fmean(result["tasks"].values())
        result["average_stderr"] = average_stderr(list(result["stderr"].values()))
        result["average_chance"] = statistics.fmean(result["chance"].values())
        result["examples"] = scores.examples
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def above_chance(row: dict, dense: dict) -> str:
    """``row``'s zero-shot average retained above chance against ``dense`` ± its standard error."""
    found = above_chance_retention(row["average"], row["average_stderr"], dense["average"], dense["average_stderr"],
                                   dense["average_chance"])
    if found.retention is None:
        return "n/a"
    return f"{found.retention:.2f} ± {found.stderr:.2f}"


def key(row: dict) -> tuple:
    return row["pruner"], row["seed"], row["ratio"], row["recovery"]


def cell(values: list[float], digits: int) -> str:
    """A value, or the median and range of several (one per seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def name(row: dict) -> str:
    return row["pruner"] if row["recovery"] == "none" else f"{row['pruner']},{row['recovery'].replace('+', ',')}"


def zeroshot_table(results: dict) -> str:
    """Every row with zero-shot scores: each task's primary metric ± standard error, the mean, and the retention
    above chance (a row under the dense one gives each task's chance level)."""
    dense = results["dense"]
    if "tasks" not in dense:
        return ""
    names = list(dense["tasks"])
    header = ["ratio", "pipeline", "seed", *[n.removesuffix("_local") for n in names], "avg", "above-chance retention"]

    def cells(row: dict) -> list[str]:
        scores = [f"{row['tasks'][n]:.3f} ± {row['stderr'][n]:.3f}" for n in names]
        return scores + [f"{row['average']:.3f} ± {row['average_stderr']:.3f}"]

    rows = [["0", "dense", "", *cells(dense), "1"],
            ["", "chance", "", *[f"{dense['chance'][n]:.3f}" for n in names], f"{dense['average_chance']:.3f}", "0"]]
    for row in results["rows"]:
        if "tasks" in row:
            rows.append([f"{row['ratio']:g}", name(row), str(row["seed"]), *cells(row), above_chance(row, dense)])
    return markdown(header, rows)


def table(results: dict) -> str:
    """Every pipeline: perplexity (median and range over seeds) and bits per byte, against the dense model and, for
    a trained recovery, against its control; the zero-shot average and above-chance retention where measured."""
    dense = results["dense"]
    controls = {row["recovery"]: row for row in results["rows"] if row["pruner"] == "dense"}
    header = ["ratio", "pipeline", "params -%", "seeds", "ppl", "bits/byte", "ppl / dense", "ppl / control",
              "zero-shot avg", "above-chance retention"]
    rows = [["0", "dense", "0.0", "", f"{dense['perplexity']:.2f}", f"{dense['bits_per_byte']:.4f}", "1.00", "",
             f"{dense['average']:.3f} ± {dense['average_stderr']:.3f}" if "average" in dense else "", ""]]
    groups: dict[tuple, list[dict]] = {}
    for row in results["rows"]:
        groups.setdefault((row["ratio"], row["pruner"], row["recovery"]), []).append(row)
    order = {key: index for index, key in enumerate([*PRUNERS, *RECOVERIES])}
    for (ratio, pruner, recovery), members in sorted(
            groups.items(), key=lambda g: (g[0][0], order[g[0][1]], order.get(g[0][2], len(order)), g[0][2])):
        ppl = [m["perplexity"] for m in members]
        reference = controls.get(control(recovery) or "")
        against = "" if reference is None or pruner == "dense" else f"{statistics.median(ppl) / reference['perplexity']:.2f}"
        reduction = [100 * (1 - m["params"] / results["params_dense"]) for m in members]
        zero = [m for m in members if "average" in m]
        rows.append([
            f"{ratio:g}", name(members[0]), f"{statistics.median(reduction):.1f}",
            ",".join(str(m["seed"]) for m in members), cell(ppl, 2), cell([m["bits_per_byte"] for m in members], 4),
            f"{statistics.median(ppl) / dense['perplexity']:.2f}", against,
            "; ".join(f"{m['average']:.3f} ± {m['average_stderr']:.3f}" for m in zero),
            "; ".join(above_chance(m, dense) for m in zero) if "average" in dense else "",
        ])
    return markdown(header, rows)


def whole_table(results: dict) -> str:
    """The rows measured on the whole evaluation half: perplexity, bits per byte, word perplexity."""
    if "whole" not in results["dense"]:
        return ""
    measured = [("0", "dense", results["dense"])]
    measured += [(f"{r['ratio']:g}", name(r), r) for r in results["rows"] if "whole" in r]
    return markdown(["ratio", "pipeline", "ppl", "bits/byte", "word ppl", "tokens"],
                    [[ratio, label, f"{r['whole']['perplexity']:.2f}", f"{r['whole']['bits_per_byte']:.4f}",
                      f"{r['whole']['word_perplexity']:.2f}", f"{r['whole']['tokens']:,}"]
                     for ratio, label, r in measured])


def plan(args) -> list[dict]:
    """Every row to measure, in the order they run (one slicing serves all its recoveries): the controls first."""
    rows = [{"pruner": "dense", "seed": args.seeds[0], "ratio": 0.0, "recovery": recovery}
            for recovery in dict.fromkeys(control(r) for r in args.recoveries) if recovery]
    for ratio in args.ratios:
        for pruner in args.pruners:
            for seed in (args.seeds if pruner in RANDOMIZED else args.seeds[:1]):
                for recovery in args.recoveries:
                    if pruner == "slicegpt" and "refit" in recovery:
                        continue  # refit compensates per-layer slicing; slicegpt rotates the hidden width
                    rows.append({"pruner": pruner, "seed": seed, "ratio": ratio, "recovery": recovery})
    return rows


def full(row: dict, selected: list[tuple[str, float]]) -> bool:
    """Whether ``row`` is one of ``--full``'s ``PIPELINE@RATIO`` (every seed of it)."""
    return (name(row), row["ratio"]) in selected


def selection(value: str) -> tuple[str, float]:
    """``PIPELINE@RATIO`` (``activation,refit,lora@0.3``) as ``("activation,refit,lora", 0.3)``."""
    pipeline_name, _, ratio = value.rpartition("@")
    return pipeline_name, float(ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratios", type=lambda s: [float(x) for x in s.split(",")], default=list(RATIOS),
                        help="FFN ratios (default 0.3,0.5)")
    parser.add_argument("--pruners", type=lambda s: s.split(","), default=list(DEFAULT_PRUNERS))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2],
                        help="seeds of the randomized pruners (the others, and the controls, run at the first)")
    parser.add_argument("--recoveries", type=lambda s: s.split(","), default=list(RECOVERIES),
                        help=f"recovery chains (default {','.join(RECOVERIES)}): steps of {', '.join(RECOVERY_PLUGINS)} "
                        "joined by +, each with any options in brackets, e.g. refit+distill[tokens=30720]")
    parser.add_argument("--limit", type=int, default=300, help="examples per zero-shot task on the --full rows")
    parser.add_argument("--full", type=selection, action="append", default=[], metavar="PIPELINE@RATIO",
                        help="a row (every seed of it) that also gets the whole evaluation half and zero-shot, e.g. "
                        "activation,refit,lora@0.3 or dense,lora@0 (its control); repeatable. The dense model always does")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/quality-<model>.json)")
    args = parser.parse_args()
    unknown = sorted(set(args.pruners) - set(PRUNERS))
    if unknown:
        raise SystemExit(f"unknown pruner: {', '.join(unknown)}")
    for recovery in args.recoveries:
        for step in recovery_steps(recovery):
            step_options(step)
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or Path(f"bench/results/quality-{args.model}.json")

    data = shared_data_dir()
    if data is None:
        raise SystemExit("benchmark data not found: set PRUNEKIT_DATA or run from the checkout beside ../shared/data")
    tasks = [f"local:{data / 'tasks'}"]
    loaded = load_model(args.model)
    base, tokenizer = loaded.model, loaded.tokenizer
    source = perplexity.default_source()
    text = (token_stream(tokenizer, source), token_units(tokenizer, source), perplexity.window_length(base, None))
    settings = {"model": args.model, "limit": args.limit,
                "perplexity": {"source": source, "length": text[2], "windows": perplexity.PerplexityOptions().windows,
                               "prefix_token": perplexity.prefix_token(tokenizer)},
                "training_text": training_text()}
    results: dict = json.loads(output.read_text()) if output.is_file() else {}
    if results.get("settings") != settings:
        results = {"settings": settings, "rows": []}
    results.update(params_dense=count_parameters(base), versions=package_versions(),
                   machine={"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                            "platform": platform.platform(), "load_average_at_start": os.getloadavg()})

    def save() -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        files.write_json(output, results, indent=2)

    if "dense" not in results:
        results["dense"] = measure(base, tokenizer, text, tasks, args.limit)
        save()
    print(f"dense: ppl {results['dense']['perplexity']:.2f}", flush=True)
    results["rows"] = [row for row in results["rows"] if "tasks" in row or not full(row, args.full)]
    done = {key(row) for row in results["rows"]}
    todo = [row for row in plan(args) if key(row) not in done]
    slicings: dict[tuple, list[dict]] = {}
    for row in todo:  # rows of one slicing are contiguous in the plan
        slicings.setdefault((row["pruner"], row["seed"], row["ratio"]), []).append(row)
    for (pruner, seed, ratio), rows in slicings.items():
        with UncompressedLayers.temporary() as uncompressed:
            sliced, architecture, facts = compress(base, tokenizer, pruner, ratio, seed, uncompressed)
            recovered: dict[tuple[str, ...], tuple] = {(): (sliced, [])}  # refit+lora continues refit's model
            for row in rows:
                limit = args.limit if full(row, args.full) else 0
                chain = tuple(recovery_steps(row["recovery"]))
                done_part = max((part for part in recovered if chain[:len(part)] == part), key=len)
                model, steps = recovered[done_part]
                if chain != done_part:
                    with tempfile.TemporaryDirectory(prefix="prunekit-bench-") as work:
                        model, more = recover(copy.deepcopy(model), tokenizer, architecture, uncompressed,
                                              list(chain[len(done_part):]), seed, Path(work), args.model)
                    steps = steps + more
                    recovered[chain] = (model, steps)
                quality = measure(model, tokenizer, text, tasks, limit)
                results["rows"].append({**row, **facts, "recovery_steps": steps, "limit": limit, **quality})
                save()
                print(f"r={ratio:g} {pruner} seed {seed} {row['recovery']}: ppl {quality['perplexity']:.2f}, "
                      f"bits/byte {quality['bits_per_byte']:.4f}"
                      + (f", avg {quality['average']:.3f}" if limit else ""), flush=True)
    print()
    print(table(results))
    print()
    print(whole_table(results))
    print()
    print(zeroshot_table(results))
    print(f"\n{len(results['rows'])} rows; JSON: {output}")


if __name__ == "__main__":
    main()
