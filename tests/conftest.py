"""Shared fixtures. prunekit's own fixtures for plugin authors come from ``prunekit.plugins.testing``."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# No test needs the Hugging Face Hub (CI has no route to it); set before any HF library is imported,
# which reads these once, so a Hub id fails at once instead of after minutes of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

pytest_plugins = ["pytester"]


def assert_one_line_error(result, *fragments: str) -> None:
    """A ``CliRunner`` result of bad input: exit code 2 and one line on stderr holding every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("PRUNEKIT_NO_PROGRESS", "1")


@pytest.fixture
def core(monkeypatch, capsys):
    """``core(*args)`` runs ``core ARGS`` in-process through the console script's entry point
    (``prunekit.cli:main``): its exit code, stdout and stderr. The environment variables a command
    sets (offline mode, verbosity) are restored afterwards."""
    saved = dict(os.environ)

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["core", *args])
        from prunekit.cli import main

        with pytest.raises(SystemExit) as exit:
            main()
        out, err = capsys.readouterr()
        return exit.value.code, out, err

    yield invoke
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def installed_distribution(tmp_path, monkeypatch) -> Callable[..., str]:
    """Make an importable distribution with a ``prunekit`` entry point visible to importlib.metadata.

    ``installed_distribution(dist, module, source, entry_point=None)`` writes the module and a
    ``*.dist-info`` directory on a fresh ``sys.path`` entry, exactly what an installer leaves,
    without running one (the slow tests build and pip-install a real package).
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(dist: str, module: str, source: str, entry_point: str | None = None, version: str = "1.0") -> str:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[prunekit]\n{entry_point or module} = {module}\n")
        modules.append(module)
        importlib.invalidate_caches()
        return entry_point or module

    yield install
    for module in modules:
        sys.modules.pop(module, None)
