"""Progress bars for long stages, on stderr so that ``--json`` output on stdout stays clean."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")

QUIET_ENV = "PRUNEKIT_NO_PROGRESS"


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar, hidden when stderr is not a terminal or in quiet mode."""
    console = Console(stderr=True)
    hidden = not console.is_terminal or bool(os.environ.get(QUIET_ENV))
    yield from rich_track(
        items, description=description, total=total, console=console, transient=True, disable=hidden
    )
