"""Progress bars for long stages, on stderr so that ``--json`` output on stdout stays clean."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")

QUIET_ENV = "PRUNEKIT_NO_PROGRESS"


def bars_hidden(console: Console | None = None) -> bool:
    """Whether progress bars are hidden: when stderr is not a terminal (logs, pipes, CI) or ``PRUNEKIT_NO_PROGRESS``
    is set. Every bar prunekit shows follows it, and those of the libraries it drives where they can be told."""
    console = console or Console(stderr=True)
    return not console.is_terminal or bool(os.environ.get(QUIET_ENV))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar, hidden as :func:`bars_hidden` says."""
    console = Console(stderr=True)
    yield from rich_track(items, description=description, total=total, console=console, transient=True,
                          disable=bars_hidden(console))
