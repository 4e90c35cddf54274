"""docs/api.md lists the public API: each module's ``__all__``, and a field table per payload.

Every name the page lists must be importable from the module it is listed under and be in that
module's ``__all__``; every name in a public module's ``__all__`` must be listed; every payload
dataclass must have a table naming its fields in order, with their annotated types and a meaning.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

API_DOC = Path(__file__).parent.parent / "docs" / "api.md"

PUBLIC = [
    "prunekit",
    "prunekit.hookspecs",
    "prunekit.payloads",
    "prunekit.architectures",
    "prunekit.plugins.surgery",
    "prunekit.errors",
    "prunekit.plugins.data",
    "prunekit.plugins.testing",
    "prunekit.cli_shared",
    "prunekit.plugins.search.hookspecs",
    "prunekit.plugins.search.payloads",
]
"""The modules a plugin may import; the page has one section for each, in this order."""

PAYLOADS = ["prunekit.payloads", "prunekit.plugins.search.payloads"]
"""The modules whose dataclasses travel through hooks, each with a field table on the page."""


def sections(text: str, level: str) -> dict[str, str]:
    """Heading ``<level> `name``` → the text up to the next heading of that level or above."""
    parts = re.split(rf"^{level} `([^`]+)`[^\n]*$", text, flags=re.MULTILINE)
    return {name: re.split(r"^#{1,%d} " % len(level), body, flags=re.MULTILINE)[0]
            for name, body in zip(parts[1::2], parts[2::2])}


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, ``\\|`` unescaped."""
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table(text: str, header: list[str]) -> list[list[str]]:
    """The rows of the first table in ``text`` whose header is ``header``, backticks stripped
    from the first cell."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and cells(line) == header:
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                values = cells(row)
                rows.append([values[0].strip("`"), *values[1:]])
            return rows
    return []


def same_type(written: str, annotation: object) -> bool:
    """Whether the page's type is the field's annotation, as Python reads both (quotes aside)."""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return ast.unparse(ast.parse(written)) == ast.unparse(ast.parse(text))


def modules() -> dict[str, str]:
    return sections(API_DOC.read_text(), "##")


def listed(module: str) -> list[list[str]]:
    return table(modules()[module], ["name", "what it is"])


def field_tables() -> list[tuple[str, str]]:
    return [(module, name) for module in PAYLOADS for name in importlib.import_module(module).__all__
            if dataclasses.is_dataclass(getattr(importlib.import_module(module), name))]


def test_the_page_has_one_section_per_public_module_in_order():
    assert list(modules()) == PUBLIC


@pytest.mark.parametrize("module", PUBLIC)
def test_every_listed_name_is_importable_from_its_module_and_described(module):
    imported = importlib.import_module(module)
    rows = listed(module)
    assert rows, f"docs/api.md: the {module} section has no | name | what it is | table"
    for name, purpose in rows:
        assert hasattr(imported, name), f"docs/api.md lists {module}.{name}, which does not exist"
        assert name in imported.__all__, f"docs/api.md lists {module}.{name}, which is not in its __all__"
        assert purpose, f"docs/api.md lists {module}.{name} without saying what it is"


@pytest.mark.parametrize("module", PUBLIC)
def test_every_name_in_a_public_modules_all_is_listed(module):
    imported = importlib.import_module(module)
    names = [name for name, _ in listed(module)]
    missing = [name for name in imported.__all__ if name not in names]
    assert not missing, f"{module}.__all__ has {missing}, which docs/api.md does not list"
    assert len(set(imported.__all__)) == len(imported.__all__)


@pytest.mark.parametrize(("module", "name"), field_tables(), ids=lambda value: value.rsplit(".", 1)[-1])
def test_each_payload_has_a_table_of_its_fields_in_order_with_their_types(module, name):
    fields = dataclasses.fields(getattr(importlib.import_module(module), name))
    rows = table(sections(modules()[module], "###").get(name, ""), ["field", "type", "meaning"])
    assert [row[0] for row in rows] == [f.name for f in fields], (
        f"docs/api.md: the field table of {name} must list {[f.name for f in fields]}, in order"
    )
    for (field, kind, meaning), f in zip(rows, fields):
        assert same_type(kind.strip("`"), f.type), f"docs/api.md: {name}.{field} is {f.type}, not {kind}"
        assert meaning, f"docs/api.md: {name}.{field} has no meaning"


def test_the_architecture_members_table_covers_the_interface():
    from prunekit.architectures import Architecture

    public = [name for name in Architecture.__annotations__] + [
        name for name, value in vars(Architecture).items() if not name.startswith("_") and inspect.isfunction(value)
    ]
    rows = table(sections(modules()["prunekit.architectures"], "###")["Architecture"], ["member", "what it is"])
    members = [row[0].split("(")[0] for row in rows]
    assert sorted(members) == sorted(set(public))
    assert all(row[1] for row in rows)


def test_a_field_added_without_docs_fails(monkeypatch):
    """The check above notices a payload field that the page does not document."""
    import prunekit.payloads as payloads

    @dataclasses.dataclass
    class Metrics(payloads.Metrics):
        energy: float | None = None

    monkeypatch.setattr(payloads, "Metrics", Metrics)
    with pytest.raises(AssertionError, match="must list"):
        test_each_payload_has_a_table_of_its_fields_in_order_with_their_types("prunekit.payloads", "Metrics")
