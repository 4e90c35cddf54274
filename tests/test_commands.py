"""Commands and hooks that plugins add: ``register_commands`` (``core search``, ``core laws`` and a
third party's) and ``add_hookspecs`` (the search's ``select_ratio``)."""

from __future__ import annotations

import json

import pluggy
import pytest
import typer
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.manager import Plugins

COMMANDS = """
import typer
from prunekit import hookimpl

greet = typer.Typer(help="Greetings.")

@greet.command("hello")
def hello(name: str = "world") -> None:
    print(f"hello {name}")

@hookimpl
def register_commands(cli):
    cli.command("answer")(lambda: print(42))
    cli.add_typer(greet, name="greet")
"""

HALF_BROKEN = """
from prunekit import hookimpl

@hookimpl
def register_commands(cli):
    cli.command("half")(lambda: None)
    raise RuntimeError("the second command needs a library that is missing")
"""


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    monkeypatch.delenv("PRUNEKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PRUNEKIT_DISABLE_PLUGINS", raising=False)


def names(app: typer.Typer) -> set[str]:
    commands = {info.name or info.callback.__name__ for info in app.registered_commands}
    return commands | {info.name for info in app.registered_groups}


def test_search_and_laws_are_commands_of_built_in_plugins():
    app = typer.Typer()
    registry = Plugins()
    registry.register_commands(app)
    assert {"search", "laws"} <= names(app)
    infos = {info.name: info for info in registry.infos()}
    assert infos["search"].hooks == ("add_hookspecs", "register_commands")
    assert infos["laws"].hooks == ("register_commands",)
    assert infos["search"].source == infos["laws"].source == "builtin"


def test_a_third_party_plugin_adds_a_command_and_a_sub_app(installed_distribution):
    installed_distribution("prunekit-greet", "pk_greet", COMMANDS, entry_point="greet")
    app = typer.Typer()
    app.command("version")(lambda: print("1"))  # a second command, so that "answer" is not the whole app
    Plugins().register_commands(app)
    assert {"answer", "greet", "search", "laws"} <= names(app)
    result = CliRunner().invoke(app, ["greet", "hello", "--name", "prunekit"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "hello prunekit"


def test_a_plugin_whose_commands_fail_is_recorded_and_the_others_still_work(installed_distribution):
    installed_distribution("prunekit-half", "pk_half", HALF_BROKEN, entry_point="half", version="0.3")
    app = typer.Typer()
    registry = Plugins()
    registry.register_commands(app)
    assert "half" not in names(app)  # what it had added is taken back
    assert {"search", "laws"} <= names(app)
    failure = registry.failures["half"]
    assert (failure.distribution, failure.version) == ("prunekit-half", "0.3")
    assert failure.error == "RuntimeError: the second command needs a library that is missing"
    assert not registry.pm.has_plugin("half")


def test_the_command_line_lists_a_failed_plugin_and_still_answers(installed_distribution, monkeypatch):
    from prunekit import cli, manager

    installed_distribution("prunekit-half", "pk_half", HALF_BROKEN, entry_point="half", version="0.3")
    registry = Plugins()
    registry.register_commands(typer.Typer())
    monkeypatch.setattr(manager, "get_plugins", lambda: registry)
    result = CliRunner().invoke(cli.app, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["half"]["error"].startswith("RuntimeError: the second command")


def test_the_search_brings_select_ratio_and_pluggy_checks_its_implementations():
    registry = Plugins()
    assert registry.hookspecs()["select_ratio"].__module__ == "prunekit.plugins.search.hookspecs"
    assert {registry.pm.get_name(i.plugin) for i in registry.pm.hook.select_ratio.get_hookimpls()} >= {"bandit", "optuna"}

    class WrongSelector:
        @hookimpl
        def select_ratio(self, request, budget):
            return None

    with pytest.raises(pluggy.PluginValidationError, match="budget"):
        registry.register(WrongSelector(), name="wrong")
    assert not registry.pm.has_plugin("wrong")


def test_with_the_search_disabled_its_selectors_still_load(monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DISABLE_PLUGINS", "search")
    registry = Plugins()
    assert "select_ratio" not in registry.hookspecs()
    assert {"bandit", "optuna"} <= {info.name for info in registry.infos()}
    app = typer.Typer()
    registry.register_commands(app)
    assert "laws" in names(app) and "search" not in names(app)
