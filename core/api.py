"""``prunekit.run``: a run from Python, the same pipeline ``core run`` calls, returning its report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prunekit.output import Report


def run(model: str, plugins: Sequence[str] = (), ratio: float = 0.0, **settings: Any) -> Report:
    """Compress ``model`` (a built-in name, a local directory or a Hub id) with ``plugins`` in order, writing
    ``model/``, ``report.json`` and ``report.md`` as ``core run`` does, and return the report
    (:class:`prunekit.output.Report`).

    ``settings`` are the run config's other fields, checked the same way: ``output``, ``tasks``, ``limit``, ``seed``,
    ``device``, ``dtype``, ``ratios`` and ``options={plugin: {key: value}}`` (what ``-o plugin.key=value`` sets). Bad
    input raises :class:`prunekit.errors.UsageError` before anything is written. As on the command line, nothing touches
    the Hugging Face Hub unless a Hub model or dataset is named (:mod:`prunekit.hub`)."""
    from prunekit import hub, pipeline
    from prunekit.config import build_config
    from prunekit.manager import get_plugins

    hub.offline_by_default()
    config = build_config(None, {"model": model, "plugins": list(plugins), "ratio": ratio, **settings})
    return pipeline.run(config, get_plugins())
