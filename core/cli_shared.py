"""What the ``core`` command and its sub-commands (``laws``, ``search``) share: the consoles, the
error contract and the option types.

A module of its own so that the sub-commands' modules import it, not ``prunekit.cli``, which
mounts them: the command line then loads in any order, ``python -m prunekit.cli`` included.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from prunekit.errors import Interrupted, UsageError

log = logging.getLogger("prunekit")
stdout = Console()
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Bad input → one line and exit 2; a failure → one line and exit 1 (traceback with -v);
    Ctrl-C → one line saying what was kept, exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            stderr.print(f"Error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as exc:
            kept = exc.kept if isinstance(exc, Interrupted) else "nothing of this command was saved"
            stderr.print(f"Interrupted: {kept}.", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(130) from exc
        except Exception as exc:
            log.debug("traceback", exc_info=True)
            message = f"Error: {type(exc).__name__}: {exc}".splitlines()[0]
            stderr.print(message + " (run with -v for the traceback)", markup=False, soft_wrap=True)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Built-in name (smollm2-135m, gemma3-270m, tiny-<family>), local dir or Hub id."),
]
PluginsOpt = Annotated[str | None, typer.Option("--plugins", help="Comma-separated plugin names.")]
TasksOpt = Annotated[
    str | None, typer.Option("--tasks", help="Comma-separated lm-eval tasks, or local:DIR of task configs.")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Examples per task.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Run config file (YAML or TOML).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="auto, float32, float16 or bfloat16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="A plugin setting PLUGIN.KEY=VALUE (repeatable), e.g. -o lora.steps=50."),
]
