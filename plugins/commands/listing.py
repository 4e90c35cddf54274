"""``plugins``: the ``core plugins list`` and ``core plugins show NAME`` commands.

They read the registry (:class:`prunekit.manager.Plugins`): what is installed, where from, the hooks
each plugin implements and in which order pluggy calls them, the plugins that failed to load and
why, and one plugin's settings (:mod:`.describe`). Only the registry is read, so they answer at
once, whatever the plugins would import to do their work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from prunekit.plugins.commands.cli import plugins_app

    cli.add_typer(plugins_app, name="plugins")
