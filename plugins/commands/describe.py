"""What ``core plugins show NAME`` tells about one plugin: where it comes from, what it does, the hooks
it implements and the settings it accepts. The settings come from the plugin's own ``plugin_options``
model, the one that validates a run's ``options.<name>``, so what is shown is what is enforced.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from prunekit.errors import UsageError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from prunekit.manager import Plugins


class Setting(BaseModel):
    """One field of a plugin's settings model."""

    name: str
    type: str
    required: bool
    default: Any = None
    """The default as it would appear in a config file (JSON values)."""
    description: str | None = None


class PluginDescription(BaseModel):
    """Everything ``core plugins show`` prints, also as ``--json``."""

    name: str
    source: str
    distribution: str | None
    version: str | None
    core: bool
    module: str
    file: str | None
    summary: str | None
    """The first paragraph of the plugin module's docstring."""
    hooks: list[str]
    settings: list[Setting]
    settings_schema: dict[str, Any] | None
    """The JSON schema of the settings model, or ``None`` when the plugin declares none."""


def type_name(annotation: Any) -> str:
    """``list[prunekit.payloads.Dimension]`` → ``list[Dimension]``; ``<class 'int'>`` → ``int``."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", text)


def setting(name: str, field: FieldInfo) -> Setting:
    required, default = field.is_required(), None
    if not required:
        value = field.get_default(call_default_factory=True)
        default = None if value is PydanticUndefined else TypeAdapter(Any).dump_python(value, mode="json")
    return Setting(name=name, type=type_name(field.annotation), required=required, default=default,
                   description=field.description)


def describe(plugins: Plugins, name: str) -> PluginDescription:
    """The description of the registered plugin ``name``; a failed or unknown name is bad input."""
    plugins.check_loaded(name)
    info = next((i for i in plugins.infos() if i.name == name), None)
    if info is None:
        raise UsageError(f"unknown plugin {name!r}; installed: {', '.join(i.name for i in plugins.infos())}")
    plugin = plugins.pm.get_plugin(name)
    module = inspect.getmodule(plugin)
    doc = inspect.getdoc(plugin) or (inspect.getdoc(module) if module else None)
    try:
        file = inspect.getsourcefile(plugin if inspect.ismodule(plugin) else type(plugin))
    except TypeError:  # defined in an interactive session
        file = None
    model = plugins.options_models().get(name)
    return PluginDescription(
        name=name, source=info.source, distribution=info.distribution, version=info.version, core=info.core,
        module=module.__name__ if module else type(plugin).__qualname__, file=file,
        summary=doc.split("\n\n")[0].replace("\n", " ") if doc else None, hooks=list(info.hooks),
        settings=[setting(key, field) for key, field in model.model_fields.items()] if model else [],
        settings_schema=model.model_json_schema() if model else None,
    )
