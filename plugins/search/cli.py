"""``core search``: the best compression within a latency budget, or the quality/latency front.

A Typer command that ``prunekit.cli`` mounts, with the command line's error contract
(``reports_errors``: bad input → one line, exit 2) and option types from
:mod:`prunekit.cli_shared`. The work is :func:`prunekit.plugins.search.session.run_search`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from prunekit.cli_shared import (
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LimitOpt,
    ModelOpt,
    OptionOpt,
    PluginsOpt,
    TasksOpt,
    emit_json,
    reports_errors,
    stderr,
    stdout,
)
from prunekit.errors import keeps_on_interrupt


@reports_errors
def search(
    model: ModelOpt = None,
    plugins: PluginsOpt = None,
    latency_budget: Annotated[
        str | None,
        typer.Option("--latency-budget", help="A fraction of the uncompressed latency (0.7) or a time (40ms); "
                     "omit for the quality/latency Pareto front."),
    ] = None,
    latency_kind: Annotated[
        Literal["decode", "prefill"], typer.Option("--latency-kind", help="decode (ms per token) or prefill (ms per prompt).")
    ] = "decode",
    objective: Annotated[
        Literal["mean", "alpha-fair"], typer.Option("--objective", help="Per-task retention aggregated by its mean, or α-fair.")
    ] = "mean",
    alpha: Annotated[float, typer.Option("--alpha", help="α of the α-fair objective (0 mean, 1 log, large: the worst task).")] = 1.0,
    ratios: Annotated[
        list[str] | None,
        typer.Option("--ratios", help="Ratio grid START:STOP:STEP or R1,R2,..., optionally DIM=... for one dimension "
                     "(repeatable). Default 0:0.8:0.1."),
    ] = None,
    batches: Annotated[int, typer.Option("--batches", help="Evaluation batches in a full evaluation.")] = 4,
    examples: Annotated[int, typer.Option("--examples", help="Zero-shot examples per task in one batch.")] = 20,
    windows: Annotated[int, typer.Option("--windows", help="Perplexity windows in one batch.")] = 2,
    window_length: Annotated[int, typer.Option("--window-length", help="Tokens per perplexity window.")] = 512,
    max_evaluations: Annotated[
        float | None, typer.Option("--max-evaluations", help="Full evaluations the search may spend (default: no limit).")
    ] = None,
    tasks: TasksOpt = None,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    output: Annotated[Path | None, typer.Option("--output", help="Search directory (default runs/search-<model>-<pruners>-<budget>).")] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (default: sqlite file in the search directory).")
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name in the storage (default: from the settings).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the evaluation batches and the selectors.")] = None,
    option: OptionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search pruners and ratios for the best quality within a latency budget; rerun to resume."""
    from pydantic import ValidationError

    from prunekit.config import build_config, describe_validation_error
    from prunekit.errors import UsageError
    from prunekit.manager import get_plugins
    from prunekit.plugins.search.budget import LatencyBudget
    from prunekit.plugins.search.evaluation import QualitySettings
    from prunekit.plugins.search.objective import Objective
    from prunekit.plugins.search.session import SearchArguments, run_search
    from prunekit.plugins.search.space import parse_ratios

    run_config = build_config(
        config,
        dict(model=model, plugins=plugins, tasks=tasks, limit=limit, device=device, dtype=dtype, seed=seed),
        option,
    )
    try:
        quality = QualitySettings(batches=batches, examples=examples, windows=windows, window_length=window_length)
        aggregate = Objective(kind=objective, alpha=alpha)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from exc
    if max_evaluations is not None and not max_evaluations > 0:
        raise UsageError(f"--max-evaluations must be positive, got {max_evaluations:g}")
    arguments = SearchArguments(
        config=run_config,
        budget=None if latency_budget is None else LatencyBudget.parse(latency_budget, latency_kind),
        kind=latency_kind,
        objective=aggregate,
        grids=parse_ratios(ratios),
        quality=quality,
        max_evaluations=max_evaluations,
        output=output,
        storage=storage,
        study=study,
    )
    with keeps_on_interrupt("every finished trial is kept in the search's study; rerun the same command to resume"):
        summary = run_search(arguments, get_plugins(), announce=lambda message: stderr.print(message, highlight=False))
    if as_json:
        emit_json(summary.model_dump_json(indent=2))
        return
    if summary.best is not None:
        best = summary.best
        stdout.print(
            f"Chosen: {best.key}: latency {best.latency:.3g} {summary.latency_unit}, "
            f"{summary.objective} {best.quality:.4f} ({best.batches} of {summary.batches} batches)",
            highlight=False,
        )
    else:
        table = Table(title=f"Pareto front: {summary.objective} vs latency ({summary.latency_unit})")
        for column in ("configuration", "latency", "quality"):
            table.add_column(column)
        for key in summary.pareto:
            row = next(r for r in summary.evaluated if r.key == key)
            table.add_row(key, f"{row.latency:.3g}", f"{row.quality:.4f}")
        stdout.print(table)
    stdout.print(
        f"{summary.evaluations:.2f} full evaluations spent (an exhaustive grid: {summary.candidates}); "
        f"{summary.timings} shapes timed. Wrote {summary.directory}/report.md"
        + (f"; chosen model in {summary.run}/model" if summary.run else ""),
        highlight=False,
    )
