"""``trace``: with ``PRUNEKIT_TRACE_PLUGINS=1``, log every hook call with the plugins it asked and how long it took
(docs/plugins.md). The first built-in registered, it is handed the plugin manager (``add_hookspecs``) before any
other plugin is, as pytest's own tracing is a plugin of pytest, and so sees every call once they have loaded.

Built on pluggy's ``add_hookcall_monitoring``, which sees each call (the per-run subset callers' too) with the
implementations pluggy is about to ask: a first-result hook's line names them in the order asked, not only the one that
answered. Lines go to the ``prunekit.trace`` logger, which writes them to stderr as plain lines (one per call, never
wrapped, easy to grep) whatever ``-v`` says and whether or not the program configured logging.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prunekit import hookimpl

if TYPE_CHECKING:
    import pluggy

TRACE_ENV = "PRUNEKIT_TRACE_PLUGINS"
log = logging.getLogger("prunekit.trace")


def enabled() -> bool:
    """Whether ``PRUNEKIT_TRACE_PLUGINS`` asks for a trace (``1``/``true``/``yes``/``on``)."""
    return os.environ.get(TRACE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def call_order(hook_impls: Sequence[Any]) -> list[str]:
    """Plugin names in the order pluggy calls them: the reverse of its implementation list
    (wrappers first, then ``tryfirst``, then the last registered, ``trylast`` at the end)."""
    return [impl.plugin_name for impl in reversed(hook_impls)]


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a line is logged (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def trace(pm: pluggy.PluginManager) -> Callable[[], None]:
    """Start logging ``pm``'s hook calls; returns the function that stops it."""
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("prunekit trace: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO)
    starts: list[float] = []  # a stack: hooks may call hooks (a search runs whole pipelines)

    def before(hook_name: str, hook_impls: Sequence[Any], kwargs: Any) -> None:
        starts.append(time.perf_counter())

    def after(outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[Any], kwargs: Any) -> None:
        seconds = time.perf_counter() - starts.pop()
        if hook_name == "add_hookspecs":  # each plugin's registration replaying it: loading, not a call
            return
        plugins = ", ".join(call_order(hook_impls)) or "no plugin"
        failed = f", raised {type(outcome.exception).__name__}" if outcome.exception else ""
        log.info("hook %s [%s] %.3f s%s", hook_name, plugins, seconds, failed)

    return pm.add_hookcall_monitoring(before, after)


@hookimpl
def add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Watch the calls of the registry this plugin joins, when ``PRUNEKIT_TRACE_PLUGINS`` asks for it: registered
    first, it sees every call after the plugins have loaded."""
    if enabled():
        trace(pluginmanager)
