"""Finding and registering plugins: built-ins and third-party packages through one path.

Built-ins are listed in :data:`DEFAULT_PLUGINS` (the only place the core names them) and
registered with ``pm.register`` exactly as entry-point plugins are. Third-party plugins come
from the entry-point group ``prunekit`` through pluggy's ``load_setuptools_entrypoints``, one
entry point at a time, so that a plugin that fails to import, has a wrong hook signature or
implements a hook that does not exist is recorded as a :class:`PluginFailure` and the others
still load.

Every command that reads the registry imports every plugin module, ``core plugins list`` and the
check of a run's options included, so a module that pluggy registers imports torch, transformers
and other heavy libraries inside its hook bodies (or through a module those import), never at its
top: then these commands answer in a fraction of a second instead of seconds.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy

from pydantic import BaseModel, ValidationError

from prunekit import hookspecs, tracing
from prunekit.config import describe_validation_error
from prunekit.errors import UsageError

if TYPE_CHECKING:
    from prunekit.config import RunConfig
    from prunekit.hooks import Hooks

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT
LOAD_ENV = "PRUNEKIT_LOAD_PLUGINS"
DISABLE_ENV = "PRUNEKIT_DISABLE_PLUGINS"

CORE_PLUGINS: dict[str, str] = {
    "slicer": "prunekit.slicing",
}
"""Built-ins that take part in every run: the structural slicer. (Model families need no plugin:
an adapter is derived from the model itself, :mod:`prunekit.discovery`.)"""

DEFAULT_PLUGINS: dict[str, str] = {
    **CORE_PLUGINS,
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
    "bandit": "prunekit.plugins.bandit",
    "optuna": "prunekit.plugins.optuna_search",
}
"""Every built-in plugin, by the name users give to ``--plugins``."""


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
    """A third-party plugin that could not be loaded, and why."""

    name: str
    distribution: str | None
    version: str | None
    error: str


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {_normalise(name) for name in value.split(",") if name.strip()}


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so ``My_Plugin`` and ``my-plugin`` name the same package."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


class Plugins:
    """The registered plugins of this process and those that failed to load."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if tracing.enabled():
            tracing.trace(self.pm)
        self.failures: dict[str, PluginFailure] = {}
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
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                version = ep.dist.version if ep.dist else None
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.failures[ep.name] = PluginFailure(ep.name, dist, version, error)
                log.warning("plugin %r from %s failed to load: %s", ep.name, dist, error)

    def register(self, plugin: object, name: str) -> None:
        """Register an in-process plugin (tests, notebooks); same checks as any other."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.pm.unregister(name=name)
            raise

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)

    def infos(self) -> list[PluginInfo]:
        """Every registered plugin with its source and the hooks it implements."""
        dists = {
            id(plugin): dist for plugin, dist in self.pm.list_plugin_distributions()
        }
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin()):
            if plugin is None:  # blocked
                continue
            dist = dists.get(id(plugin))
            hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ()))
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=dist.metadata["Name"] if dist else None,
                    version=dist.version if dist else None,
                    hooks=hooks,
                    core=name in CORE_PLUGINS,
                )
            )
        return infos

    def call_order(self) -> dict[str, list[str]]:
        """Every hook, in pipeline order, with the plugins implementing it in the order pluggy
        asks them (``core plugins list --hooks``); ``recover`` alone runs its selected plugins in
        the run's ``--plugins`` order instead."""
        spec = f"{hookspecs.PROJECT}_spec"
        names = [name for name, value in vars(hookspecs).items() if hasattr(value, spec)]  # definition order
        return {name: tracing.call_order(getattr(self.pm.hook, name).get_hookimpls()) for name in names}

    def options_models(self) -> dict[str, type[BaseModel]]:
        """Each plugin's declared settings model (``plugin_options``), by plugin name."""
        return {
            self.pm.get_name(impl.plugin): model
            for impl in self.pm.hook.plugin_options.get_hookimpls()
            if (model := impl.function()) is not None
        }

    def resolve_options(self, config: RunConfig) -> RunConfig:
        """``config`` with every plugin's options validated and its defaults filled in.

        Options for a plugin that is not installed are bad input (a misspelt name would otherwise
        be ignored silently). Selected plugins with a settings model get their defaults even when
        the config gives none, so the report records every setting that was in effect."""
        models = self.options_models()
        registered = {name for name, plugin in self.pm.list_name_plugin() if plugin is not None}
        unknown = sorted(set(config.options) - registered)
        if unknown:
            raise UsageError(f"invalid config: options for unknown plugin {unknown[0]!r}")
        resolved = dict(config.options)
        for name in set(config.options) | (set(config.plugins) & set(models)):
            if name not in models:
                continue
            try:
                settings = models[name].model_validate(config.options.get(name, {}))
            except ValidationError as exc:
                raise UsageError(describe_validation_error(exc, prefix=f"options.{name}.")) from exc
            resolved[name] = settings.model_dump(mode="json")
        return config.model_copy(update={"options": resolved})

    def check_loaded(self, name: str) -> None:
        """Naming a plugin that failed to load is bad input, reported with its package and error."""
        if name in self.failures:
            failure = self.failures[name]
            raise UsageError(
                f"plugin {name!r} (from {failure.distribution} {failure.version}) failed to load: {failure.error}"
            )

    def hooks(self, selected: list[str]) -> Hooks:
        """The typed hook facade for a run that uses the plugins named in ``selected``.

        Unknown names and names of plugins that failed to load are bad input, reported before
        anything runs.
        """
        from prunekit.hooks import Hooks

        for name in selected:
            self.check_loaded(name)
            if not self.pm.has_plugin(name) or name in CORE_PLUGINS:
                available = ", ".join(i.name for i in self.infos() if not i.core)
                raise UsageError(f"unknown plugin {name!r}; available: {available}")
        active = set(selected) | set(CORE_PLUGINS)
        return Hooks(self.pm, active)


@functools.cache
def get_plugins() -> Plugins:
    """The process-wide plugin registry, built on first use."""
    return Plugins()
