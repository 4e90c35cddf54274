"""The core defines the hooks and knows no plugin: it imports no module of ``prunekit.plugins`` and
not optuna, and names the built-in plugins in one place only, ``DEFAULT_PLUGINS`` in
``core/manager.py``, from which they are registered like any third party's.

Two checks: the imports of every core module (``ast``, so an import inside a function counts too),
and the text of every core file, docstrings and comments included: the issue's
``grep -rn "prunekit.plugins\\|optuna" core/``, its dot matching any character as grep's does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import PROJECT_ROOT

CORE = PROJECT_ROOT / "core"
MANAGER = CORE / "manager.py"
FORBIDDEN = re.compile(r"prunekit.plugins|optuna")


def core_modules() -> list[Path]:
    return sorted(path for path in CORE.rglob("*.py") if "__pycache__" not in path.parts)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an ``import`` or ``from ... import`` names, the names
    imported from a package included (``from prunekit import plugins`` names ``prunekit.plugins``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def builtin_list_lines() -> range:
    """The lines of the ``DEFAULT_PLUGINS`` literal in core/manager.py."""
    for node in ast.parse(MANAGER.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "DEFAULT_PLUGINS" for t in targets):
            return range(node.lineno, node.end_lineno + 1)
    raise AssertionError("core/manager.py has no DEFAULT_PLUGINS")


def test_no_core_module_imports_a_plugin_or_optuna():
    offending = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {name}"
        for path in core_modules()
        for line, name in imported(ast.parse(path.read_text(), filename=str(path)))
        if name == "prunekit.plugins" or name.startswith(("prunekit.plugins.", "optuna"))
    ]
    assert not offending, "the core imports plugins: " + "; ".join(offending)


def test_the_core_names_plugins_only_in_the_list_of_built_ins():
    allowed = builtin_list_lines()
    offending = []
    for path in sorted(p for p in CORE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # not text
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if FORBIDDEN.search(line) and not (path == MANAGER and number in allowed):
                offending.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)


def test_every_built_in_plugin_is_a_module_of_prunekit_plugins_or_of_the_core():
    """The list the two checks allow holds module paths, nothing else (CORE_PLUGINS: the core's own)."""
    from prunekit.manager import CORE_PLUGINS, DEFAULT_PLUGINS

    for name, module in DEFAULT_PLUGINS.items():
        assert module.startswith("prunekit.plugins.") or CORE_PLUGINS.get(name) == module, (name, module)


def test_the_checks_catch_an_import_inside_a_function_and_a_docstring():
    source = '"""Uses :mod:`prunekit.plugins.bandit`."""\n\ndef f():\n    from prunekit.plugins import bandit\n    import optuna\n'
    names = [name for _, name in imported(ast.parse(source))]
    assert "prunekit.plugins.bandit" in names and "optuna" in names
    assert FORBIDDEN.search(source.splitlines()[0])
