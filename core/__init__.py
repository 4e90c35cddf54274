"""prunekit: structured slicing of large language models, every step a plugin.

Plugin authors need only :data:`hookimpl` from here; everything else a plugin touches arrives in the typed payloads of
:mod:`prunekit.payloads`. Users call :func:`run` (a run from Python) and :func:`load` (a checkpoint prunekit wrote,
:mod:`prunekit.loading`); both import torch and transformers only when called, so ``core --version`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prunekit.hookspecs import hookimpl

if TYPE_CHECKING:
    from prunekit.output import Report

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "load", "run"]


def run(model: str, plugins: Sequence[str] = (), ratio: float = 0.0, **settings: Any) -> Report:
    """Compress ``model`` (a built-in name, a local directory or a Hub id) with ``plugins`` in order, writing the run
    directory as ``core run`` does, and return the report (:class:`prunekit.output.Report`).

    ``settings`` are the run config's other fields, checked the same way: ``output``, ``tasks``, ``limit``, ``seed``,
    ``device``, ``dtype``, ``ratios`` and ``options={plugin: {key: value}}`` (what ``-o plugin.key=value`` sets). Bad
    input raises :class:`prunekit.errors.UsageError` before anything is written. As on the command line, nothing
    touches the Hugging Face Hub unless a Hub model or dataset is named (:mod:`prunekit.hub`)."""
    from prunekit import hub, pipeline
    from prunekit.config import build_config
    from prunekit.manager import get_plugins

    hub.offline_by_default()
    config = build_config(None, {"model": model, "plugins": list(plugins), "ratio": ratio, **settings})
    return pipeline.run(config, get_plugins())


def __getattr__(name: str) -> Any:
    """``prunekit.load``, imported on first use."""
    if name == "load":
        from prunekit.loading import load

        return load
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
