"""The ``core`` / ``prunekit`` command line (one Typer app under two names).

``run`` is the core's own command; every other comes from a plugin through ``register_commands``, called once as this
module builds the app (``core eval``, ``core plugins``, ``core search``, ``core laws``).

Exit codes: 0 success; 2 bad input, one line on stderr naming the problem (click's parse errors too: :func:`main`); 1
a failure during the run; 130 after Ctrl-C. ``--json`` puts the result alone on stdout (``cli_shared.json_stdout``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.main
from rich.logging import RichHandler
from rich.table import Table

from prunekit import __version__, hub, manager
from prunekit.cli_shared import (ConfigOpt, DeviceOpt, DtypeOpt, JsonOpt, LimitOpt, ModelOpt, OptionOpt, PluginsOpt,
                                 TasksOpt, emit_json, reports_errors, stderr, stdout)
from prunekit.config import build_config

try:
    from typer import TyperException as ClickError  # click's errors: recent typer carries its own copy of click
except ImportError:  # older typer raises click's own
    from click import ClickException as ClickError

app = typer.Typer(name="core", help="Make LLMs smaller and faster by structured slicing; every step is a plugin.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _show_version(value: bool) -> None:
    if value:
        stdout.print(f"prunekit {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Show the version.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug.")] = 0,
) -> None:
    hub.offline_by_default()  # every command starts offline: only a Hub name goes online (prunekit.hub)
    logging.basicConfig(level={0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG), format="%(message)s",
                        handlers=[RichHandler(console=stderr, show_path=False)], force=True)
    # huggingface_hub logs through a handler of its own and would repeat each line through ours
    logging.getLogger("huggingface_hub").propagate = False
    # Progress is ours to show (rich, on stderr, hideable); transformers' own bars and advisory
    # warnings would break the one-line error contract, so they appear only with -vv.
    if verbose < 2:
        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # advice meant for its own CLI users
        # Set in the variables that transformers, huggingface_hub and datasets (a bar per split it
        # generates) read when imported, so that a command loading no model need not import them
        os.environ.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1",
                          HF_DATASETS_DISABLE_PROGRESS_BARS="1")
        if "huggingface_hub" in sys.modules:  # too late for the variables: the CLI called in-process
            from huggingface_hub.utils import logging as hub_logging
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            hub_logging.set_verbosity_error()
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()


@app.command()
@reports_errors
def run(
    model: ModelOpt = None, plugins: PluginsOpt = None,
    ratio: Annotated[float | None, typer.Option("--ratio", help="Fraction removed, in [0, 1).")] = None,
    tasks: TasksOpt = None, limit: LimitOpt = None, config: ConfigOpt = None,
    output: Annotated[Path | None, typer.Option("--output", help="Run directory.")] = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for every random choice.")] = None,
    stream: Annotated[bool | None, typer.Option("--stream", help="One layer in memory at a time; no evaluation.")] = None,
    option: OptionOpt = None, as_json: JsonOpt = False,
) -> None:
    """Compress a model with the chosen plugins; write model/, report.json and report.md."""
    from prunekit import pipeline

    run_config = build_config(config, dict(model=model, plugins=plugins, ratio=ratio, tasks=tasks, limit=limit,
                                           output=output, device=device, dtype=dtype, seed=seed, stream=stream), option)
    report = pipeline.run(run_config, manager.get_plugins())
    if as_json:
        return emit_json(report.model_dump_json(indent=2))
    from prunekit.rendering import generation_lines, metric_rows, parameter_rows, reach_line, speedup_line

    title = f"{report.model}  ratio {report.ratio:g}  plugins {', '.join(report.plugins)}"
    table = Table("", "before", "after", title=title)
    table.add_row("parameters", f"{report.params.before:,}", f"{report.params.after:,}")
    for name, before, after, share in parameter_rows(report.params):
        table.add_row(f"  {name} ({share:.0%})", f"{before:,}", f"{after:,}")
    for name, before, after in metric_rows(report.metrics["before"], report.metrics["after"]):
        table.add_row(name, *("" if v is None else f"{v:.4g}" for v in (before, after)))
    stdout.print(table)
    if reach := reach_line(report.params, list(report.pruning)):
        stdout.print(reach[0].upper() + reach[1:] + ".", highlight=False)
    kept = report.retention
    if kept.average_retention is not None:
        stdout.print(f"Zero-shot average {kept.average_before:.4f} → {kept.average_after:.4f} "
                     f"({kept.average_retention:.1%} retained)", highlight=False)
    for line in filter(None, [speedup_line(report), *generation_lines(report, bullet="  ")]):
        stdout.print(line, highlight=False, soft_wrap=True)
    stdout.print(f"Wrote {report.config.output}", highlight=False)


manager.get_plugins().register_commands(app)  # core eval, plugins, search, laws and any plugin's own


def usage_line(error: ClickError) -> str:
    """Click's error (a bad value, a missing or unknown option, an unknown command, an extra argument) as the one line
    of the error contract, with where to read the usage."""
    line = "Error: " + " ".join(error.format_message().split())
    ctx = getattr(error, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        line += f" (see '{ctx.command_path} {max(ctx.command.get_help_option_names(ctx), key=len)}')"
    return line


def main() -> None:
    """The ``core`` script: ``app`` with click's own errors in one line too. Standalone, click would print a usage
    block and a boxed message for a parse error; here it returns ``typer.Exit``'s code (``--help``, ``--version``, 130
    after Ctrl-C) and raises its errors, reported as one line on stderr with their exit code (2 for a usage error)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except ClickError as exc:
        # A group called without arguments raises NoArgsIsHelpError (click ≥ 8.2) once its help is printed
        if type(exc).__name__ != "NoArgsIsHelpError":
            stderr.print(usage_line(exc), markup=False, highlight=False, soft_wrap=True)
        code = exc.exit_code
    except typer.Abort:  # end of input at a prompt
        stderr.print("Aborted.", highlight=False)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
