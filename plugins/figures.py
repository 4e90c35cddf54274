"""Figures the built-in plugins draw (the recovery plot, a law's fit, a search's frontier), made one way.

matplotlib's file-only ``Agg`` backend, so that plotting needs no display and never opens a window, and each
figure written atomically like every other file (:func:`prunekit.files.staged`). matplotlib is imported here,
on first use, so a plugin that plots costs nothing to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunekit import files

if TYPE_CHECKING:
    from pathlib import Path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(figure: Any, target: Path, **options: Any) -> None:
    """A finished figure, laid out tightly, in the format of ``target``'s suffix (``options``: ``savefig``'s),
    written whole or not at all; the figure is closed after."""
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    with files.staged(target) as path:
        figure.savefig(path, format=target.suffix.lstrip(".") or "png", **options)
    pyplot().close(figure)
