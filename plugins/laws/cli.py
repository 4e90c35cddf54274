"""``core laws``: sweep a grid of ratios and recovery sizes, fit the compression law, predict.

A Typer sub-app that ``prunekit.cli`` mounts under ``laws``, with the command line's error
contract (``reports_errors``: bad input → one line, exit 2) and option types from
:mod:`prunekit.cli_shared`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from prunekit.errors import UsageError

if TYPE_CHECKING:
    from prunekit.plugins.laws.analysis import FitReport
    from prunekit.plugins.laws.points import Point

laws_app = typer.Typer(
    help="Compression laws: fit how loss and accuracy scale with the ratio and recovery data.",
    no_args_is_help=True,
)

FIT_FILE = "fit.json"
PLOT_FILE = "fit.png"

RetentionOpt = Annotated[
    float, typer.Option("--retention", help="σ of the critical ratio r* = σ^(1/β) − 1 (accuracy kept).")
]


def parse_list(text: str, kind: type, flag: str) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise UsageError(f"{flag} takes comma-separated {kind.__name__} values, got {text!r}") from exc


def write_fit(points: list[Point], sources: list[str], output: Path, retention: float) -> FitReport:
    """Fit, then write ``fit.json`` and ``fit.png`` into ``output``."""
    from prunekit.plugins.laws.analysis import fit_points
    from prunekit.plugins.laws.plot import plot_fit
    from prunekit.files import write_text

    report = fit_points(points, sources, retention)
    output.mkdir(parents=True, exist_ok=True)
    write_text(output / FIT_FILE, report.model_dump_json(indent=2) + "\n")
    plot_fit(report, points, output / PLOT_FILE)
    return report


def show_fit(report: FitReport, output: Path, as_json: bool = False) -> None:
    """The fit as a JSON document (``as_json``), or as one table per metric."""
    from prunekit.plugins.laws.law import LawForm

    if as_json:
        emit_json(report.model_dump_json(indent=2))
        return
    for metric, laws in report.laws.items():
        table = Table(title=f"{metric}: L = L0^α (1+r)^β (1+1/(D+1))^γ, {report.points} points")
        for column in ("form", "α", "β", "γ", "adj R²", "adj R² centered", "held-out ratio error"):
            table.add_column(column)
        for form in LawForm:
            law = laws.get(form)
            if law is None:
                table.add_row(form.value, "not fitted: " + report.unfitted[metric][form], "", "", "", "", "")
                continue
            holdout = report.leave_one_ratio_out.get(metric, {}).get(form)
            table.add_row(
                form.value,
                *(f"{law.coefficients[t]:.3f} ± {law.standard_errors[t]:.3f}" if t in law.coefficients else ""
                  for t in ("alpha", "beta", "gamma")),
                f"{law.adj_r2:.4f}",
                "" if law.adj_r2_centered is None else f"{law.adj_r2_centered:.4f}",
                "" if holdout is None else f"{holdout.mean:.2%} (max {holdout.max:.2%})",
            )
        stdout.print(table)
    for form, ratio in report.critical_ratio.items():
        stdout.print(f"critical ratio ({form.value} accuracy law, σ = {report.retention:g}): r* = {ratio:.3f}",
                     highlight=False)
    stdout.print(f"Wrote {output / FIT_FILE} and {output / PLOT_FILE}", highlight=False)


@laws_app.command()
@reports_errors
def sweep(
    model: ModelOpt = None,
    plugins: PluginsOpt = None,
    ratios: Annotated[str, typer.Option("--ratios", help="Comma-separated ratios in (0, 1).")] = "0.1,0.3,0.5,0.7,0.9",
    recover_sizes: Annotated[
        str, typer.Option("--recover-sizes", help="Comma-separated recovery sizes D, in the unit of the --recovery option; 0 = none.")
    ] = "0,40",
    recovery: Annotated[
        str, typer.Option("--recovery", help="PLUGIN.KEY that recovers and receives D as that option.")
    ] = "lora.steps",
    tasks: TasksOpt = None,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    output: Annotated[Path | None, typer.Option("--output", help="Sweep directory (default runs/laws-<model>-<plugins>).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for every random choice.")] = None,
    option: OptionOpt = None,
    accuracy_metric: Annotated[
        str, typer.Option("--accuracy-metric", help="lm-eval metric averaged over the tasks as accuracy; "
                          "primary: acc_norm where reported, else acc.")
    ] = "primary",
    retention: RetentionOpt = 0.8,
    keep_models: Annotated[bool, typer.Option("--keep-models", help="Keep every point's model/ checkpoint.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline at every (ratio, D) of the grid (finished points are reused), then fit."""
    from prunekit.config import build_config
    from prunekit.plugins.laws.sweep import run_sweep
    from prunekit.manager import get_plugins

    base = build_config(
        config,
        dict(model=model, plugins=plugins, tasks=tasks, limit=limit, output=output, device=device,
             dtype=dtype, seed=seed),
        option,
    )
    directory, points = run_sweep(
        base, get_plugins(), parse_list(ratios, float, "--ratios"), parse_list(recover_sizes, int, "--recover-sizes"),
        recovery=recovery, accuracy_metric=accuracy_metric, keep_models=keep_models,
        announce=lambda message: stderr.print(message, highlight=False),
    )
    try:
        report = write_fit(points, [str(directory)], directory, retention)
    except UsageError as exc:  # the sweep itself succeeded; its points are kept for a later fit
        stderr.print(f"Not fitted yet: {exc} (results in {directory})", markup=False, highlight=False)
        if as_json:  # still a document: the points exist, the fit does not
            emit_json(json.dumps({"fitted": False, "reason": str(exc), "results": str(directory),
                                  "points": len(points)}, indent=2))
        return
    show_fit(report, directory, as_json)


@laws_app.command()
@reports_errors
def fit(
    results: Annotated[list[Path], typer.Argument(help="results.json files or sweep directories (combined).")],
    output: Annotated[Path | None, typer.Option("--output", help="Where fit.json and fit.png go (default: beside the first results).")] = None,
    retention: RetentionOpt = 0.8,
    as_json: JsonOpt = False,
) -> None:
    """Fit the full law and its two reduced forms, for loss and accuracy, by least squares in log space."""
    from prunekit.plugins.laws.points import read_points

    points = read_points(results)
    first = results[0]
    target = output or (first if first.is_dir() else first.parent)
    report = write_fit(points, [str(path) for path in results], target, retention)
    show_fit(report, target, as_json)


@laws_app.command()
@reports_errors
def predict(
    fit_file: Annotated[Path, typer.Option("--fit", help="A fit.json written by `core laws fit`.")],
    ratio: Annotated[float, typer.Option("--ratio", help="Compression ratio in [0, 1).")],
    recover_size: Annotated[
        int | None, typer.Option("--recover-size", help="Recovery data size D (full law); omit for the law without D.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Which of the fit's models to take L0 from.")] = None,
    baseline_loss: Annotated[float | None, typer.Option("--baseline-loss", help="L0 for loss, for another model.")] = None,
    baseline_accuracy: Annotated[
        float | None, typer.Option("--baseline-accuracy", help="L0 for accuracy, for another model.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Predicted loss (and perplexity) and accuracy at a ratio, with 95% prediction intervals."""
    import json
    import math

    from prunekit.plugins.laws.analysis import read_fit

    report = read_fit(fit_file)
    given = {"loss": baseline_loss, "accuracy": baseline_accuracy}
    predictions = [
        report.predict(metric, ratio, recover_size, baseline=given[metric], model=model)
        for metric in report.laws
    ]
    if as_json:
        emit_json(json.dumps([p.model_dump(mode="json") for p in predictions], indent=2))
        return
    table = Table(title=f"ratio {ratio:g}" + ("" if recover_size is None else f", D = {recover_size}"))
    for column in ("metric", "law", "L0", "predicted", "95% interval"):
        table.add_column(column)
    for p in predictions:
        table.add_row(p.metric, p.form.value, f"{p.baseline:.4g}", f"{p.value:.4g}",
                      f"{p.interval[0]:.4g} – {p.interval[1]:.4g}")
        if p.metric == "loss":
            low, high = (math.exp(v) for v in p.interval)
            table.add_row("perplexity", p.form.value, f"{math.exp(p.baseline):.4g}", f"{math.exp(p.value):.4g}",
                          f"{low:.4g} – {high:.4g}")
    stdout.print(table)
