"""What the ``core`` command and the commands plugins add to it (``register_commands``) share: the consoles, the error
contract, ``--json``'s stdout and the option types (docs/api.md). Apart from ``prunekit.cli``, which mounts the
plugins' commands, so that their modules import this one and the command line loads in any order.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console

from prunekit.errors import Interrupted, UsageError

__all__ = ["reports_errors", "json_stdout", "emit_json", "stdout", "stderr", "ModelOpt", "PluginsOpt", "TasksOpt",
           "LimitOpt", "ConfigOpt", "DeviceOpt", "DtypeOpt", "JsonOpt", "OptionOpt"]

log = logging.getLogger("prunekit")
stdout = Console()
stderr = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

_json_stdout: list[TextIO] = []
"""The real stdout while a ``--json`` command runs (:func:`json_stdout`), where :func:`emit_json` writes."""


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers (an extension's printf): flushed at exit, they would land on the restored stdout."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # no C library to ask (Windows): nothing buffered there to lose
        pass


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """While a ``--json`` command runs, stdout carries only what :func:`emit_json` writes.

    Anything else (a library's ``print``, rich's stdout console, a subprocess inheriting descriptor 1) goes to stderr:
    stdout's descriptor is pointed at stderr's (``os.dup2``), the real one kept for :func:`emit_json`. Where stdout
    has no descriptor (click's ``CliRunner``, pytest's ``capsys``), ``sys.stdout`` is swapped for ``sys.stderr``
    instead. Restored afterwards, on errors too; nested, a no-op."""
    if _json_stdout:
        yield
        return
    out, err = sys.stdout, sys.stderr
    out.flush()
    err.flush()
    out_fd, err_fd = _fileno(out), _fileno(err)
    if out_fd is None or err_fd is None:
        _json_stdout.append(out)
        try:
            with contextlib.redirect_stdout(err):
                yield
        finally:
            _json_stdout.pop()
        return
    saved = os.dup(out_fd)  # ``real`` closes it when closed
    real = open(saved, "w", encoding=getattr(out, "encoding", None) or "utf-8", errors=getattr(out, "errors", None))
    os.dup2(err_fd, out_fd)
    _json_stdout.append(real)
    try:
        yield
    finally:
        _json_stdout.pop()
        with contextlib.suppress(Exception):
            out.flush()  # what a library printed and Python still buffers goes to stderr with the rest
        _flush_c_stdio()
        real.flush()
        os.dup2(saved, out_fd)
        real.close()


def emit_json(text: str) -> None:
    """Write a ``--json`` command's document, on one or more lines, alone on the real stdout."""
    target = _json_stdout[-1] if _json_stdout else sys.stdout
    target.write(text.rstrip("\n") + "\n")
    target.flush()


def reports_errors(command: F) -> F:
    """Bad input → one line and exit 2; a failure → one line and exit 1 (traceback with -v); Ctrl-C → one line
    saying what was kept, exit 130. With ``as_json`` (``--json``) the command runs in :func:`json_stdout`: its
    document, written by :func:`emit_json`, is alone on stdout."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with json_stdout() if kwargs.get("as_json") else contextlib.nullcontext():
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


ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Built-in name (smollm2-135m, gemma3-270m, tiny-<family>), local dir or Hub id.")]
PluginsOpt = Annotated[str | None, typer.Option("--plugins", help="Comma-separated plugin names.")]
TasksOpt = Annotated[str | None, typer.Option(
    "--tasks", help="Comma-separated lm-eval tasks, or local:DIR of task configs.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Examples per task.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Run config file (YAML or TOML).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="auto, float32, float16 or bfloat16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OptionOpt = Annotated[list[str] | None, typer.Option(
    "--option", "-o", help="A plugin setting PLUGIN.KEY=VALUE (repeatable), e.g. -o lora.steps=50.")]
