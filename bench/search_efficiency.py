"""How few evaluations each selector needs to find the grid's best configuration under a budget.

Two steps:

``record`` measures every configuration of a search space on the real model once, exactly as
``core search`` measures them (:class:`prunekit.plugins.search.evaluation.ModelEvaluator`): every model
shape timed with the ``latency`` protocol next to the uncompressed model, every configuration
scored on every evaluation batch, the uncompressed model's reference scores. It writes one JSON
table (:class:`prunekit.plugins.search.table.Table`) and can be interrupted: a rerun keeps what is in it.

    .venv/bin/python bench/search_efficiency.py record --out bench/data/search_table_smollm2.json

``compare`` replays searches against the table (:func:`prunekit.plugins.search.table.replay`: the real
search loop and selector plugins, measurements read from the table) over many seeds:

- ``bandit``: its own stopping rule;
- ``tpe`` and ``random`` (the ``optuna`` plugin's samplers), given a quarter of the grid's
  evaluations;
- the exhaustive grid, which evaluates every configuration within the budget once.

For each it reports how often the answer is the grid's best feasible configuration and how many
full evaluations (batches measured / batches per evaluation) and shape timings it spent, and for
the samplers also how many evaluations it took to first evaluate the grid's best.

    .venv/bin/python bench/search_efficiency.py compare --table bench/data/search_table_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from prunekit.manager import get_plugins  # noqa: E402
from prunekit.files import write_text  # noqa: E402
from prunekit.plugins.search.objective import Objective  # noqa: E402
from prunekit.plugins.search.table import Table, replay  # noqa: E402

DEFAULT_TABLE = Path(__file__).parent / "data" / "search_table_smollm2.json"


# --- record ---------------------------------------------------------------------------------------


def record(args: argparse.Namespace) -> None:
    import torch

    from prunekit.config import build_config
    from prunekit.pipeline import with_evaluator_options
    from prunekit.plugins.search.evaluation import ModelEvaluator, QualitySettings
    from prunekit.plugins.search.space import parse_ratios

    plugins = get_plugins()
    config = build_config(None, {"model": args.model, "plugins": args.plugins, "tasks": args.tasks, "seed": args.seed},
                          args.option)
    evaluators = plugins.hooks(config.plugins).evaluators()
    config = plugins.resolve_options(with_evaluator_options(config, evaluators))
    pruners = [name for name in config.plugins if name not in evaluators]
    quality = QualitySettings(batches=args.batches, examples=args.examples, windows=args.windows,
                              window_length=args.window_length)
    started, load_before = time.time(), os.getloadavg()
    evaluator = ModelEvaluator(config, plugins, pruners, evaluators, parse_ratios(args.ratios), quality, args.kind)
    space = evaluator.space
    out: Path = args.out
    table = Table.model_validate_json(out.read_text()) if out.is_file() else Table(
        model=args.model,
        pruners={p: [d.value for d in dims] for p, dims in space.pruners.items()},
        axes={d.value: {"units": a.units, "ratios": list(a.ratios)} for d, a in space.axes.items()},
        batches=args.batches, reference={}, timings={}, scores={},
    )

    def save() -> None:
        table.notes = {
            "settings": {"model": args.model, "plugins": pruners, "evaluators": evaluators, "tasks": config.tasks,
                         "ratios": args.ratios, "quality": quality.model_dump(), "latency_kind": args.kind,
                         "latency": config.options.get("latency"), "seed": args.seed, "score_ratio": evaluator.ratio},
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "python": platform.python_version()},
            "load_average_at_start": load_before, "load_average_now": os.getloadavg(),
            "seconds_this_session": round(time.time() - started, 1),
            "recorded_until": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, table.model_dump_json(indent=1) + "\n")

    if len(table.reference) < args.batches:
        table.reference = {str(k): v for k, v in evaluator.reference(range(args.batches)).items()}
        save()
        print(f"reference scored ({time.time() - started:.0f} s)", flush=True)
    candidates = space.candidates()
    for index, candidate in enumerate(candidates, start=1):
        shape = space.structure(candidate)
        missing = [k for k in range(args.batches) if str(k) not in table.scores.get(candidate.key, {})]
        if shape in table.timings and not missing:
            continue
        measurer = evaluator.prepare(candidate)
        if shape not in table.timings:
            timing = measurer.time()
            table.timings[shape] = {"milliseconds": timing.milliseconds,
                                    "reference_milliseconds": timing.reference_milliseconds}
        scores = table.scores.setdefault(candidate.key, {})
        for batch in missing:
            scores[str(batch)] = measurer.scores(batch)
        save()
        print(f"[{index}/{len(candidates)}] {candidate.key}: {table.timings[shape]['milliseconds'] / table.timings[shape]['reference_milliseconds']:.3f} × latency "
              f"({time.time() - started:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    save()


# --- compare --------------------------------------------------------------------------------------


def first_found(outcome, key: str, batches: int) -> float | None:
    """Full evaluations spent when ``key`` first had all its batches measured."""
    seen: set[tuple[str, int]] = set()
    for trial in outcome.history:
        seen |= {(trial.candidate.key, batch) for batch in trial.scores}
        if sum(1 for k, _ in seen if k == key) >= batches:
            return len(seen) / batches
    return None


def compare(args: argparse.Namespace) -> dict:
    table = Table.model_validate_json(args.table.read_text())
    plugins = get_plugins()
    objective = Objective(kind=args.objective, alpha=args.alpha)
    results = {}
    for budget in args.budget:
        space = table.space()
        best = table.best(objective, budget)
        feasible = table.feasible(space, budget)
        quarter = max(1, len(feasible) // 4)  # at most a quarter of the grid's evaluations
        methods = {
            "bandit": ("bandit", {}, None),
            "tpe": ("optuna", {"sampler": "tpe"}, quarter),
            "random": ("optuna", {"sampler": "random"}, quarter),
        }
        rows = {}
        for name, (selector, options, cap) in methods.items():
            found, spent, timed, first = [], [], [], []
            started = time.time()
            for seed in range(args.seeds):
                outcome = replay(table, plugins, selector, objective=objective, budget=budget, seed=seed,
                                 max_evaluations=cap, options=options)
                answer = outcome.selection.best
                found.append(answer is not None and answer.key == best.key)
                spent.append(outcome.evaluations / table.batches)
                timed.append(len(outcome.timings))
                if cap is not None:  # how long the sampler takes to reach the grid's best at all
                    free = replay(table, plugins, selector, objective=objective, budget=budget, seed=seed,
                                  options=options)
                    first.append(first_found(free, best.key, table.batches))
            rows[name] = {
                "found": sum(found) / len(found),
                "evaluations_mean": statistics.fmean(spent),
                "evaluations_median": statistics.median(spent),
                "evaluations_max": max(spent),
                "timings_mean": statistics.fmean(timed),
                "cap": cap,
                "first_found_median": statistics.median(first) if first else None,
                "seconds": round(time.time() - started, 1),
            }
            print(f"budget {budget:g} {name}: {rows[name]}", flush=True)
        rows["grid"] = {
            "found": 1.0, "evaluations_mean": float(len(feasible)), "evaluations_median": float(len(feasible)),
            "evaluations_max": float(len(feasible)), "timings_mean": float(len(table.timings)), "cap": None,
            "first_found_median": None, "seconds": 0.0,
        }
        results[str(budget)] = {
            "best": best.key, "best_quality": table.quality(best, objective), "configurations": len(space.candidates()),
            "feasible": len(feasible), "shapes": len(table.timings), "methods": rows,
        }
    return {"table": str(args.table), "objective": objective.describe(), "seeds": args.seeds, "budgets": results}


def markdown(report: dict) -> str:
    lines = [
        f"Objective: {report['objective']}; {report['seeds']} seeds per method.",
        "",
        "| budget | method | finds the grid's best | full evaluations (mean / median / max) | shapes timed (mean) | "
        "evaluations to first evaluate the grid's best (median) |",
        "|---|---|---|---|---|---|",
    ]
    for budget, result in report["budgets"].items():
        for name, row in result["methods"].items():
            cap = f" (at most {row['cap']})" if row["cap"] is not None else ""
            first = "" if row["first_found_median"] is None else f"{row['first_found_median']:.1f}"
            lines.append(
                f"| {budget} | {name}{cap} | {row['found']:.0%} | {row['evaluations_mean']:.2f} / "
                f"{row['evaluations_median']:.2f} / {row['evaluations_max']:.2f} | {row['timings_mean']:.1f} | {first} |"
            )
    lines.append("")
    for budget, result in report["budgets"].items():
        lines.append(
            f"- budget {budget}: grid's best {result['best']} ({result['best_quality']:.4f}); "
            f"{result['feasible']} of {result['configurations']} configurations within budget, {result['shapes']} shapes"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="Measure every configuration once into a table.")
    rec.add_argument("--model", default="smollm2-135m")
    rec.add_argument("--plugins", default="prunenet,magnitude,activation",
                     help="Pruners, and optionally the evaluators whose tasks count.")
    rec.add_argument("--tasks", default=None, help="Zero-shot tasks (e.g. local:../shared/data/tasks).")
    rec.add_argument("--ratios", action="append", default=None, help="As core search --ratios (repeatable).")
    rec.add_argument("--batches", type=int, default=8)
    rec.add_argument("--examples", type=int, default=8)
    rec.add_argument("--windows", type=int, default=1)
    rec.add_argument("--window-length", type=int, default=512)
    rec.add_argument("--kind", choices=("decode", "prefill"), default="decode")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("-o", "--option", action="append", default=None, help="PLUGIN.KEY=VALUE, as in core run.")
    rec.add_argument("--out", type=Path, default=DEFAULT_TABLE)
    cmp = commands.add_parser("compare", help="Replay the selectors against a table over many seeds.")
    cmp.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    cmp.add_argument("--budget", type=float, action="append", default=None,
                     help="Fraction of the uncompressed latency (repeatable; default 0.8).")
    cmp.add_argument("--objective", choices=("mean", "alpha-fair"), default="mean")
    cmp.add_argument("--alpha", type=float, default=1.0)
    cmp.add_argument("--seeds", type=int, default=100)
    cmp.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    if args.command == "record":
        record(args)
        return
    args.budget = args.budget or [0.8]
    report = compare(args)
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
