"""The search's own hook, which the ``search`` plugin adds to the registry (``add_hookspecs``).

A selector plugin implements it as it implements a core hook, with :data:`prunekit.hookimpl`;
mark the implementation ``@hookimpl(optionalhook=True)`` so that the plugin still loads where the
``search`` plugin is disabled. Its payloads are in :mod:`prunekit.plugins.search.payloads`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit.hookspecs import hookspec

if TYPE_CHECKING:
    from prunekit.plugins.search.payloads import SelectRequest, Selection

__all__ = ["select_ratio"]


@hookspec(firstresult=True)
def select_ratio(request: SelectRequest) -> Selection | None:
    """Choose the next compression configuration for a search to try, and the best so far.

    ``request.candidates`` are the configurations (a pruner and a ratio per dimension it offers),
    ``request.history`` every finished evaluation: its measured latency, whether it met the budget,
    and its score per quality task on each evaluation batch measured (``request.quality(c)`` turns
    a candidate's batches into the search's objective, ``request.feasible(c)`` compares its timed
    latency with ``request.budget``). Return ``Selection(next=c, batches=[...])`` to evaluate ``c``
    on those batches (``None``: all, a full evaluation), or ``Selection(next=None, best=...)`` to end
    the search. The selectors the search names are asked (every installed one if it names none),
    first answer wins; return ``None`` for a search you cannot run (the bandit without a budget).
    """
