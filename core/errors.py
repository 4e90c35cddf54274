"""The one error type that means "the user asked for something we cannot do".

The CLI turns :class:`UsageError` into one line and exit code 2 (bad input), any other exception into exit code 1;
raised early, before anything is written, it is how bad input "loses nothing".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["UsageError", "Interrupted", "keeps_on_interrupt"]


class UsageError(Exception):
    """Bad input: unknown plugin, invalid config value, unsupported model, missing path..."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command, carrying what it kept and how to resume; the CLI prints that as one line and exits 130
    (128 + SIGINT, the shell's convention)."""

    def __init__(self, kept: str) -> None:
        super().__init__(kept)
        self.kept = kept


@contextmanager
def keeps_on_interrupt(kept: str | Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C inside the block into :class:`Interrupted` saying ``kept`` (a callable is asked when the interrupt
    comes, when what is on disk is known; an inner block's own word stands)."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        raise Interrupted(kept() if callable(kept) else kept) from exc
