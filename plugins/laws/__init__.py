"""``laws``: the ``core laws`` commands, compression laws fitted to a user's own sweep.

How a model's loss and accuracy change with the compression ratio and the recovery data size
(arXiv 2504.04342; docs/laws.md). A built-in plugin that adds ``core laws`` (``register_commands``:
:mod:`.cli`); a sweep's points are ordinary runs of the pipeline.

The library API, for anything that wants a fitted law as a prior:

- :func:`fit_law` fits one form of the law to arrays of (L0, r, D, L); :class:`LawFit` predicts;
- :func:`fit_points` fits every form for loss and accuracy to sweep :class:`Point` s and
  :func:`read_fit` reads back the ``fit.json`` that ``core laws fit`` writes;
- :func:`critical_ratio` is the paper's ``r* = σ^(1/β) − 1``.

The names are imported on first use, so mounting ``core laws`` costs the CLI no start-up time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from prunekit import hookimpl

if TYPE_CHECKING:
    import typer

_HOMES = {
    "FitReport": "analysis", "Holdout": "analysis", "Prediction": "analysis", "fit_points": "analysis",
    "read_fit": "analysis", "LawFit": "law", "LawForm": "law", "critical_ratio": "law", "fit_law": "law",
    "Point": "points", "read_points": "points",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from prunekit.plugins.laws.cli import laws_app

    cli.add_typer(laws_app, name="laws")
