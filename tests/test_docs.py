"""docs/hooks.md must carry one heading per hook with its exact signature (as datasette enforces)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from prunekit import hookspecs
from prunekit.manager import Plugins

HOOKS_DOC = Path(__file__).parent.parent / "docs" / "hooks.md"


SPECS = Plugins().hookspecs()
"""Every hook: the core's and those the built-in plugins add (the search's ``select_ratio``)."""


def hook_names() -> list[str]:
    return sorted(SPECS)


def signature(name: str) -> str:
    """``name(arg: Type) -> Result`` from the hookspec, annotations as written in the source."""
    sig = inspect.signature(SPECS[name])
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def documented() -> dict[str, str]:
    """Heading signature → the text of its section."""
    sections = re.split(r"^## `(.+)`$", HOOKS_DOC.read_text(), flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2]))


def summary(name: str) -> str:
    """The hookspec docstring's first paragraph (its summary), whitespace normalised and reST
    markup reduced to the doc's Markdown: ``:func:`~a.b.c``` and ``:class:`c``` → ```c```."""
    paragraph = " ".join(inspect.getdoc(SPECS[name]).split("\n\n")[0].split())
    paragraph = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", paragraph)
    return paragraph.replace("``", "`")


def test_the_hooks_the_core_defines_and_the_one_the_search_adds():
    core = sorted(name for name, spec in SPECS.items() if spec.__module__ == hookspecs.__name__)
    assert core == [
        "add_hookspecs", "compress_streaming", "derive_architecture", "evaluate", "model_source", "plugin_options",
        "recover", "register_architectures", "register_commands", "render_report", "restore_structure",
        "score_importance", "slice_layer", "slice_model",
    ]
    assert {name: SPECS[name].__module__ for name in set(SPECS) - set(core)} == {
        "select_ratio": "prunekit.plugins.search.hookspecs"
    }


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_heading_with_its_exact_signature(name):
    assert signature(name) in documented(), f"docs/hooks.md lacks the heading ## `{signature(name)}`"


@pytest.mark.parametrize("name", hook_names())
def test_each_section_opens_with_the_hookspec_docstrings_summary(name):
    """The docstring is the reference: its first paragraph opens the hook's section, word for word."""
    text = " ".join(documented()[signature(name)].split())
    assert text.startswith(summary(name)), (
        f"docs/hooks.md: the section of {name} must open with its hookspec's summary: {summary(name)!r}"
    )


@pytest.mark.parametrize("name", hook_names())
def test_the_lifecycle_diagram_names_every_hook(name):
    lifecycle = HOOKS_DOC.read_text().split("\n## `", 1)[0]
    assert f"{name}(" in lifecycle, f"docs/hooks.md: the lifecycle diagrams do not show {name}"


def test_no_heading_documents_a_hook_that_does_not_exist():
    expected = {signature(name) for name in hook_names()}
    assert set(documented()) <= expected


PLUGINS_DOC = HOOKS_DOC.with_name("plugins.md")


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)


@pytest.fixture
def torch_loaded_first():
    """pytester restores ``sys.modules`` after an in-process run, and neither torch nor datasets
    (its pyarrow extension types register once per process) can be imported a second time in one
    process: loaded before pytester's snapshot, they stay loaded for later tests."""
    import datasets  # noqa: F401
    import torch  # noqa: F401


def test_the_plugin_walkthrough_runs_as_written(torch_loaded_first, pytester):
    """The complete example of docs/plugins.md and its test, run by pytest as an author would."""
    module, test = [block for block in python_blocks(PLUGINS_DOC) if "prunekit_rownorm" in block]
    pytester.makepyfile(prunekit_rownorm=module, test_rownorm=test)
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
