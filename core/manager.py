"""Finding and registering plugins: built-ins and third-party packages through one path.

Built-ins are listed in :data:`DEFAULT_PLUGINS` (the only place the core names them) and registered with
``pm.register`` as entry-point plugins are. Those come from the entry-point group ``prunekit`` one at a time, so a
plugin that fails to import or to validate is recorded as a :class:`PluginFailure` and the others still load. Every
command reading the registry imports every plugin module, so a module imports heavy libraries inside its hook bodies,
never at its top (docs/plugins.md, "Keep the module light to import").
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy
from pydantic import BaseModel, ValidationError

from prunekit import hookspecs
from prunekit.config import describe_validation_error
from prunekit.errors import UsageError

if TYPE_CHECKING:
    import typer

    from prunekit.config import RunConfig
    from prunekit.hooks import Hooks
    from prunekit.payloads import ModelSource

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT
LOAD_ENV = "PRUNEKIT_LOAD_PLUGINS"
DISABLE_ENV = "PRUNEKIT_DISABLE_PLUGINS"

DEFAULT_PLUGINS: dict[str, str] = {
    "trace": "prunekit.plugins.trace",
    "slicer": "prunekit.plugins.slicer",
    "discovery": "prunekit.plugins.discovery",
    "report": "prunekit.plugins.report",
    "stream": "prunekit.plugins.streaming",
    "models": "prunekit.plugins.models",
    "random": "prunekit.plugins.random_pruner",
    "perplexity": "prunekit.plugins.evaluators.perplexity",
    "zeroshot": "prunekit.plugins.evaluators.zeroshot",
    "latency": "prunekit.plugins.evaluators.speed",
    "generation": "prunekit.plugins.evaluators.generation",
    "magnitude": "prunekit.plugins.magnitude",
    "prunenet": "prunekit.plugins.prunenet",
    "activation": "prunekit.plugins.activation",
    "slicegpt": "prunekit.plugins.slicegpt",
    "refit": "prunekit.plugins.refit",
    "lora": "prunekit.plugins.lora",
    "distill": "prunekit.plugins.distill",
    "search": "prunekit.plugins.search",
    "bandit": "prunekit.plugins.bandit",
    "optuna": "prunekit.plugins.optuna_search",
    "laws": "prunekit.plugins.laws",
    "eval": "prunekit.plugins.commands.evaluate",
    "plugins": "prunekit.plugins.commands.listing",
}
"""Every built-in plugin, by its name: the one ``--plugins`` takes, for those that take part in runs."""
CORE_PLUGINS: dict[str, str] = {name: DEFAULT_PLUGINS[name] for name in ("slicer", "discovery", "report", "stream")}
"""Built-ins that take part in every run without being named in ``--plugins``: the structural slicer, ``discovery``
(``derive_architecture``: the adapter of a model no plugin registers one for, so that a family needs no plugin of its
own), ``report`` (``render_report``: ``report.md``, the model card) and ``stream`` (``compress_streaming``)."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, as ``core plugins list`` shows it."""

    name: str
    distribution: str | None
    """``None`` for built-ins and plugins registered in-process (tests)."""
    version: str | None
    hooks: tuple[str, ...]
    core: bool
    """Core plugins take part in every run without being named."""

    @property
    def source(self) -> str:
        if self.distribution is None:
            return "builtin" if self.name in DEFAULT_PLUGINS else "local"
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, or could not add its commands, and why."""

    name: str
    distribution: str | None
    version: str | None
    error: str


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    return None if value is None else {_normalise(name) for name in value.split(",") if name.strip()}


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so ``My_Plugin`` and ``my-plugin`` name the same package."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


class Plugins:
    """The registered plugins of this process and those that failed to load."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        # historic: every plugin registered from now on is asked as it is registered (pytest_addhooks)
        self.pm.hook.add_hookspecs.call_historic(kwargs={"pluginmanager": self.pm})
        self.failures: dict[str, PluginFailure] = {}
        self._sources: dict[str, ModelSource | None] = {}
        for name in _names_from_env(DISABLE_ENV) or ():
            self.pm.set_blocked(name)
        for name, module in DEFAULT_PLUGINS.items():
            if not self.pm.is_blocked(name):
                self.pm.register(importlib.import_module(module), name=name)
        self.pm.check_pending()
        self._load_entry_points()

    def _load_entry_points(self) -> None:
        allowed = _names_from_env(LOAD_ENV)
        blocked = _names_from_env(DISABLE_ENV) or set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.metadata["Name"] if ep.dist else None
            names = {_normalise(ep.name)} | ({_normalise(dist)} if dist else set())
            if names & blocked or (allowed is not None and not names & allowed):
                log.debug("plugin %s not loaded (%s / %s)", ep.name, LOAD_ENV, DISABLE_ENV)
                continue
            try:
                self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
                self.pm.check_pending()
            except Exception as exc:  # a broken plugin must not take the others down
                self._failed(ep.name, dist, ep.dist.version if ep.dist else None, exc, "failed to load")

    def _failed(self, name: str, dist: str | None, version: str | None, exc: Exception, what: str) -> None:
        """Record plugin ``name`` as failed and unregister it, so that the others work without it."""
        if self.pm.has_plugin(name):
            self.unregister(name)
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self.failures[name] = PluginFailure(name, dist, version, error)
        log.warning("plugin %r from %s %s: %s", name, dist, what, error)

    def _distributions(self) -> dict[int, tuple[str, str]]:
        """(distribution, version) by the ``id`` of each plugin that an installed package provides."""
        return {id(plugin): (dist.metadata["Name"], dist.version)
                for plugin, dist in self.pm.list_plugin_distributions()}

    def register_commands(self, cli: typer.Typer) -> None:
        """Every plugin's commands added to ``cli`` (``register_commands``), one plugin at a time in pluggy's order; a
        plugin whose registration raises is recorded as failed, unregistered, and what it had added is taken back."""
        dists = self._distributions()
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):  # pluggy's call order
            commands, groups = len(cli.registered_commands), len(cli.registered_groups)
            try:
                impl.function(cli=cli)
            except Exception as exc:
                del cli.registered_commands[commands:], cli.registered_groups[groups:]
                dist, version = dists.get(id(impl.plugin), (None, None))
                self._failed(impl.plugin_name, dist, version, exc, "failed to add its commands")

    def register(self, plugin: object, name: str) -> None:
        """Register an in-process plugin (tests, notebooks); same checks as any other."""
        self.pm.register(plugin, name=name)
        self._sources.clear()
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.unregister(name)
            raise

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._sources.clear()

    def model_source(self, name: str) -> ModelSource | None:
        """The model an installed plugin provides under ``name`` (``model_source``), ``None`` for a local directory or
        a Hub id; asked once per name while the plugins stay the same, so a run's load and its card share one answer."""
        if name not in self._sources:
            self._sources[name] = self.pm.hook.model_source(name=name)
        return self._sources[name]

    def infos(self) -> list[PluginInfo]:
        """Every registered plugin (not the blocked) with its source and the hooks it implements."""
        dists = self._distributions()
        return [PluginInfo(name, *dists.get(id(plugin), (None, None)), core=name in CORE_PLUGINS,
                           hooks=tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())))
                for name, plugin in sorted(self.pm.list_name_plugin()) if plugin is not None]

    def hookspecs(self) -> dict[str, Callable[..., object]]:
        """Every hook by name with its specification: the core's (:mod:`prunekit.hookspecs`), then those that plugins
        added (``add_hookspecs``), each module's in the order it defines them."""
        marker = f"{hookspecs.PROJECT}_spec"
        callers = vars(self.pm.hook).values()
        modules = dict.fromkeys([hookspecs, *(caller.spec.namespace for caller in callers if caller.spec)])
        found: dict[str, Callable[..., object]] = {}
        for module in modules:
            for name, value in vars(module).items():
                if hasattr(value, marker):
                    found.setdefault(name, value)
        return found

    def call_order(self) -> dict[str, list[str]]:
        """Every hook (:meth:`hookspecs`) with its plugins in the order pluggy asks them (``core plugins list
        --hooks``); ``recover`` alone runs its selected plugins in the run's ``--plugins`` order instead."""
        return {name: [impl.plugin_name for impl in reversed(getattr(self.pm.hook, name).get_hookimpls())]
                for name in self.hookspecs()}

    def implementers(self, hook: str) -> list[str]:
        """Every registered plugin implementing ``hook``, whether or not a run selects it."""
        from prunekit.hooks import implementers

        return implementers(getattr(self.pm.hook, hook))

    def options_models(self) -> dict[str, type[BaseModel]]:
        """Each plugin's declared settings model (``plugin_options``), by plugin name."""
        return {impl.plugin_name: model for impl in self.pm.hook.plugin_options.get_hookimpls()
                if (model := impl.function()) is not None}

    def resolve_options(self, config: RunConfig) -> RunConfig:
        """``config`` with every plugin's options validated and its defaults filled in. Options for a plugin that is
        not installed are bad input (a misspelt name would be ignored silently); selected plugins get their defaults
        even when the config gives none, so that the report records every setting in effect."""
        models = self.options_models()
        registered = {name for name, plugin in self.pm.list_name_plugin() if plugin is not None}
        unknown = sorted(set(config.options) - registered)
        if unknown:
            raise UsageError(f"invalid config: options for unknown plugin {unknown[0]!r}")
        resolved = dict(config.options)
        for name in (set(config.options) | set(config.plugins)) & set(models):
            try:
                settings = models[name].model_validate(config.options.get(name, {}))
            except ValidationError as exc:
                raise UsageError(describe_validation_error(exc, prefix=f"options.{name}.")) from exc
            resolved[name] = settings.model_dump(mode="json")
        return config.model_copy(update={"options": resolved})

    def check_loaded(self, name: str) -> None:
        """Naming a plugin that failed to load is bad input, reported with its package and error."""
        if (failure := self.failures.get(name)) is not None:
            raise UsageError(
                f"plugin {name!r} (from {failure.distribution} {failure.version}) failed to load: {failure.error}")

    def hooks(self, selected: list[str]) -> Hooks:
        """The typed hook facade for a run that uses the plugins named in ``selected``; unknown names and those of
        plugins that failed to load are bad input, reported before anything runs."""
        from prunekit.hooks import Hooks

        for name in selected:
            self.check_loaded(name)
            if not self.pm.has_plugin(name) or name in CORE_PLUGINS:
                available = ", ".join(i.name for i in self.infos() if not i.core)
                raise UsageError(f"unknown plugin {name!r}; available: {available}")
        return Hooks(self.pm, set(selected) | set(CORE_PLUGINS))


@functools.cache
def get_plugins() -> Plugins:
    """The process-wide plugin registry, built on first use."""
    return Plugins()
