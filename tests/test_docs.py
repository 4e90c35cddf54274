"""docs/hooks.md must carry one heading per hook with its exact signature (as datasette enforces)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from prunekit import hookspecs

HOOKS_DOC = Path(__file__).parent.parent / "docs" / "hooks.md"


def hook_names() -> list[str]:
    return sorted(
        name for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
    )


def signature(name: str) -> str:
    """``name(arg: Type) -> Result`` from the hookspec, annotations as written in the source."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def documented() -> dict[str, str]:
    """Heading signature → the text of its section."""
    sections = re.split(r"^## `(.+)`$", HOOKS_DOC.read_text(), flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2]))


def summary(name: str) -> str:
    """The hookspec docstring's first sentence, with reST markup reduced to the doc's Markdown."""
    paragraph = " ".join(inspect.getdoc(getattr(hookspecs, name)).split("\n\n")[0].split())
    first = re.match(r"(.+?\.)(?:\s|$)", paragraph).group(1)
    first = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", first)
    return first.replace("``", "`")


def test_there_are_six_pipeline_hooks_two_registration_hooks_and_one_loading_hook():
    assert hook_names() == [
        "evaluate", "plugin_options", "recover", "register_architectures", "restore_structure",
        "score_importance", "select_ratio", "slice_layer", "slice_model",
    ]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_heading_with_its_exact_signature(name):
    assert signature(name) in documented(), f"docs/hooks.md lacks the heading ## `{signature(name)}`"


@pytest.mark.parametrize("name", hook_names())
def test_each_section_opens_with_the_hookspec_docstring(name):
    text = " ".join(documented()[signature(name)].split())
    assert summary(name) in text


def test_no_heading_documents_a_hook_that_does_not_exist():
    expected = {signature(name) for name in hook_names()}
    assert set(documented()) <= expected


PLUGINS_DOC = HOOKS_DOC.with_name("plugins.md")


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def test_the_plugin_walkthrough_runs_as_written(pytester):
    """The complete example of docs/plugins.md and its test, run by pytest as an author would."""
    module, test = [block for block in python_blocks(PLUGINS_DOC) if "prunekit_rownorm" in block]
    pytester.makepyfile(prunekit_rownorm=module, test_rownorm=test)
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
