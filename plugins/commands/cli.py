"""The commands of the built-in ``eval`` and ``plugins`` plugins, imported when the command line is
built (:mod:`.evaluate` and :mod:`.listing` add them), with the command line's error contract
(``reports_errors``) and option types from :mod:`prunekit.cli_shared`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from prunekit.cli_shared import (ConfigOpt, DeviceOpt, DtypeOpt, JsonOpt, LimitOpt, ModelOpt, OptionOpt, PluginsOpt,
                                 TasksOpt, emit_json, reports_errors, stdout)
from prunekit.plugins.commands.evaluate import evaluate


@reports_errors
def eval_(
    model: ModelOpt = None, plugins: PluginsOpt = None, tasks: TasksOpt = None, limit: LimitOpt = None,
    config: ConfigOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None, option: OptionOpt = None,
    offload: Annotated[Path | None, typer.Option("--offload", help=(
        "Folder for the weights that do not fit: accelerate places the model (GPUs, CPU up to --max-memory, "
        "then this folder). Slow."))] = None,
    max_memory: Annotated[str, typer.Option("--max-memory", help="CPU memory for weights with --offload.")] = "2GiB",
    as_json: JsonOpt = False,
) -> None:
    """Measure any model (a run's model/, a Hub id, a built-in name) with the active evaluators."""
    from prunekit.config import build_config
    from prunekit.manager import get_plugins

    run_config = build_config(config, dict(model=model, plugins=plugins, tasks=tasks, limit=limit,
                                           device=device, dtype=dtype), option)
    evaluation = evaluate(run_config, get_plugins(), offload, max_memory)
    if as_json:
        return emit_json(evaluation.model_dump_json(indent=2))
    stdout.print_json(evaluation.model_dump_json(include={"model", "params", "metrics"}))


plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)


@plugins_app.command("list")
@reports_errors
def plugins_list(
    as_json: JsonOpt = False,
    hooks: Annotated[bool, typer.Option(
        "--hooks", help="Per hook, the plugins implementing it, in the order they are called.")] = False,
) -> None:
    """Every plugin with its source and the hooks it implements; failed plugins with why."""
    from prunekit.manager import get_plugins

    registry = get_plugins()
    if hooks:
        order = registry.call_order()
        if as_json:
            return emit_json(json.dumps(order, indent=2))
        table = Table("hook", "plugins, in call order")
        for hook, names in order.items():
            if hook == "recover" and names:  # a chain in the run's order, not pluggy's (hookspecs.recover)
                table.add_row(hook, Text(", ".join(names)) + Text(" (each selected, in --plugins order)",
                                                                  style="dim"))
            else:
                table.add_row(hook, " → ".join(names) or Text("none", style="dim"))
        stdout.print(table)
        return
    infos = registry.infos()
    if as_json:
        rows: list[dict[str, Any]] = [{"name": i.name, "source": i.source, "distribution": i.distribution,
                                       "version": i.version, "hooks": list(i.hooks), "core": i.core}
                                      for i in infos]
        rows += [{"name": f.name, "source": f"{f.distribution} {f.version}", "distribution": f.distribution,
                  "version": f.version, "hooks": [], "core": False, "error": f.error}
                 for f in registry.failures.values()]
        return emit_json(json.dumps(rows, indent=2))
    table = Table("name", "source", "hooks")
    for info in infos:
        table.add_row(info.name + (" (core)" if info.core else ""), info.source, ", ".join(info.hooks))
    for failure in registry.failures.values():
        table.add_row(failure.name, f"{failure.distribution} {failure.version}",
                      Text(f"failed: {failure.error}", style="red"))
    stdout.print(table)

@plugins_app.command("show")
@reports_errors
def plugins_show(name: Annotated[str, typer.Argument(help="The plugin's name.")],
                 as_json: JsonOpt = False) -> None:
    """One plugin: its source, what it does, its hooks, and its settings with defaults."""
    from prunekit.manager import get_plugins
    from prunekit.plugins.commands.describe import describe

    description = describe(get_plugins(), name)
    if as_json:
        return emit_json(description.model_dump_json(indent=2))
    # Text(), not markup: plugin docstrings and descriptions may hold brackets such as [50%:]
    about = Table.grid(padding=(0, 2))
    about.add_row("plugin", Text(description.name + (" (core: takes part in every run)" if description.core
                                                     else "")))
    about.add_row("source", Text(description.source))
    about.add_row("module", Text(f"{description.module}  {description.file or ''}".rstrip()))
    about.add_row("hooks", Text(", ".join(description.hooks)))
    if description.summary:
        about.add_row("about", Text(description.summary.replace("``", "`")))
    stdout.print(about)
    if not description.settings:
        stdout.print("settings: none declared", highlight=False)
        return
    settings = Table("setting", "type", "default", "description", title_justify="left",
                     title=Text(f"options.{name} in a config file, or -o {name}.KEY=VALUE"))
    for field in description.settings:
        default = "(required)" if field.required else json.dumps(field.default)
        settings.add_row(*map(Text, (field.name, field.type, default, field.description or "")))
    stdout.print(settings)
