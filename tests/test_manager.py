"""Plugin discovery: built-ins and entry points through one path, allow/block lists, failures."""

from __future__ import annotations

import pluggy
import pytest

from prunekit import hookimpl
from prunekit.errors import UsageError
from prunekit.manager import CORE_PLUGINS, DEFAULT_PLUGINS, Plugins

GOOD = """
from prunekit import hookimpl
from prunekit.payloads import Metrics

@hookimpl
def evaluate(request):
    return Metrics(extra={"answer": 42.0})
"""
BROKEN_IMPORT = "raise ImportError('needs a library that is not installed')\n"
WRONG_SIGNATURE = """
from prunekit import hookimpl

@hookimpl
def score_importance(request, ratio):
    return None
"""
MISSPELT = """
from prunekit import hookimpl

@hookimpl
def score_importanc(request):
    return None
"""


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    monkeypatch.delenv("PRUNEKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PRUNEKIT_DISABLE_PLUGINS", raising=False)


def names(plugins: Plugins) -> set[str]:
    return {info.name for info in plugins.infos()}


def test_builtins_are_registered_as_plugins():
    plugins = Plugins()
    infos = {info.name: info for info in plugins.infos()}
    assert set(DEFAULT_PLUGINS) <= set(infos)
    assert infos["random"].source == "builtin" and not infos["random"].core
    assert infos["random"].hooks == ("plugin_options", "score_importance")
    assert all(infos[name].core for name in CORE_PLUGINS)
    assert "slice_layer" in infos["slicer"].hooks


def test_entry_point_plugin_is_loaded_with_its_distribution(installed_distribution):
    installed_distribution("prunekit-answer", "pk_answer", GOOD, entry_point="answer", version="2.3")
    info = {i.name: i for i in Plugins().infos()}["answer"]
    assert (info.distribution, info.version, info.hooks) == ("prunekit-answer", "2.3", ("evaluate",))
    assert info.source == "prunekit-answer 2.3"


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (BROKEN_IMPORT, "ImportError: needs a library that is not installed"),
        (WRONG_SIGNATURE, "PluginValidationError"),
        (MISSPELT, "unknown hook 'score_importanc'"),
    ],
)
def test_a_broken_plugin_is_reported_and_does_not_take_the_others_down(installed_distribution, source, error):
    installed_distribution("prunekit-answer", "pk_answer", GOOD, entry_point="answer")
    installed_distribution("prunekit-broken", "pk_broken", source, entry_point="broken", version="0.1")
    plugins = Plugins()
    assert "answer" in names(plugins) and "broken" not in names(plugins)
    failure = plugins.failures["broken"]
    assert (failure.distribution, failure.version) == ("prunekit-broken", "0.1")
    assert error in failure.error
    assert not plugins.pm.hook.score_importance.get_hookimpls() or "broken" not in {
        plugins.pm.get_name(i.plugin) for i in plugins.pm.hook.score_importance.get_hookimpls()
    }
    with pytest.raises(UsageError, match=r"plugin 'broken' \(from prunekit-broken 0.1\) failed to load"):
        plugins.hooks(["broken"])
    plugins.hooks(["answer"])  # the others are still usable


def test_allowlist_loads_only_the_named_entry_points(installed_distribution, monkeypatch):
    installed_distribution("prunekit-one", "pk_one", GOOD, entry_point="one")
    installed_distribution("prunekit-two", "pk_two", GOOD, entry_point="two")
    monkeypatch.setenv("PRUNEKIT_LOAD_PLUGINS", "prunekit_two")  # distribution name, any spelling
    assert {"one", "two"} & names(Plugins()) == {"two"}
    monkeypatch.setenv("PRUNEKIT_LOAD_PLUGINS", "one")  # entry-point name
    assert {"one", "two"} & names(Plugins()) == {"one"}
    monkeypatch.setenv("PRUNEKIT_LOAD_PLUGINS", "")
    plugins = Plugins()
    assert {"one", "two"} & names(plugins) == set()
    assert set(DEFAULT_PLUGINS) <= names(plugins)  # built-ins are not entry points


def test_blocklist_disables_entry_points_and_builtins(installed_distribution, monkeypatch):
    installed_distribution("prunekit-one", "pk_one", GOOD, entry_point="one")
    installed_distribution("prunekit-two", "pk_two", GOOD, entry_point="two")
    monkeypatch.setenv("PRUNEKIT_DISABLE_PLUGINS", "prunekit-one,random")
    plugins = Plugins()
    assert {"one", "two", "random"} & names(plugins) == {"two"}
    with pytest.raises(UsageError, match="unknown plugin 'random'"):
        plugins.hooks(["random"])


def test_unknown_plugin_lists_the_available_ones():
    with pytest.raises(UsageError) as info:
        Plugins().hooks(["does-not-exist"])
    message = str(info.value)
    assert message.startswith("unknown plugin 'does-not-exist'; available: ")
    assert "random" in message and "slicer" not in message  # core plugins are not chosen


def test_register_rejects_a_misspelt_hook_and_leaves_nothing_behind():
    class Misspelt:
        @hookimpl
        def evalute(self, request):
            return None

    plugins = Plugins()
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'evalute'"):
        plugins.register(Misspelt(), name="misspelt")
    assert "misspelt" not in names(plugins)
    plugins.pm.check_pending()
