"""``search``: the ``core search`` command, which finds the pruner and ratios that fit a latency budget.

A built-in plugin like any other: it adds the ``core search`` command (``register_commands``) and
the hook its selectors implement, ``select_ratio`` (:mod:`.hookspecs`, with its payloads in
:mod:`.payloads`; ``add_hookspecs``). Candidates are measured through the ``evaluate`` hook.

- :mod:`.space`: the configurations (pruner × a ratio per dimension it offers) and their shapes;
- :mod:`.budget`: the latency budget and how latency is read from the ``latency`` protocol;
- :mod:`.objective`: per-task retention aggregated by its mean or the α-fair utility;
- :mod:`.quality`: retention estimated from evaluation batches, paired with the uncompressed model;
- :mod:`.evaluation`: candidates of a real model, sliced and measured by the evaluators;
- :mod:`.study`: the Optuna study that records, resumes and shares a search;
- :mod:`.driver`: the loop that asks a ``select_ratio`` plugin and measures what it chose;
- :mod:`.session` and :mod:`.report`: one ``core search`` and what it writes; :mod:`.cli` its command.

The selectors themselves are plugins: ``bandit`` (:mod:`prunekit.plugins.bandit`) and ``optuna``
(:mod:`prunekit.plugins.optuna_search`). See docs/search.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit import hookimpl

if TYPE_CHECKING:
    import pluggy
    import typer


@hookimpl
def add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    from prunekit.plugins.search import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from prunekit.plugins.search.cli import search

    cli.command()(search)
