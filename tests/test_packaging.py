"""Packaging as users meet it: a wheel in a fresh venv, and a third-party plugin installed by pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_installs_into_a_fresh_venv_and_works_outside_the_repo(tmp_path):
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", PROJECT_ROOT)
    wheel = next((tmp_path / "dist").glob("prunekit-*.whl"))

    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    fresh_python = fresh / "bin" / "python"
    fresh_site = Path(run(fresh_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    # Dependencies come from the dev venv as a plain path entry: its .pth files (among them the
    # editable install of prunekit) are not executed, so `prunekit` can only come from the wheel.
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", fresh_python, "install", "--no-deps", "--quiet", wheel)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    location = run(fresh_python, "-c", "import prunekit; print(prunekit.__file__)", cwd=elsewhere).stdout
    assert location.startswith(str(fresh_site))
    listed = json.loads(run(fresh / "bin" / "core", "plugins", "list", "--json", cwd=elsewhere).stdout)
    assert {"random", "slicer"} <= {row["name"] for row in listed}
    assert run(fresh / "bin" / "prunekit", "--version", cwd=elsewhere).stdout.startswith("prunekit ")
    shipped = run(fresh_python, "-c", "import hashlib; from prunekit.plugins import data; "
                  "p = data.packaged(data.EVALUATION_TEXT); print(hashlib.sha256(p.read_bytes()).hexdigest()); "
                  "print((p.parent / 'LICENSE.wikitext2').is_file(), (p.parent / 'README.md').is_file(), "
                  "(p.parent / 'LICENSE.openstax').is_file(), len(list(data.packaged(data.TRAINING_TEXT).glob('*.txt'))))",
                  cwd=elsewhere).stdout.split()
    assert shipped[0].startswith("4f3e427e") and shipped[1:] == ["True", "True", "True", "14"]  # the texts, licences


THROWAWAY_PYPROJECT = """
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "prunekit-throwaway"
version = "0.4.2"

[project.entry-points.prunekit]
throwaway = "prunekit_throwaway"
"""

THROWAWAY_MODULE = """
from prunekit import hookimpl
from prunekit.payloads import Dimension, Importance


@hookimpl
def score_importance(request):
    arch = request.architecture
    layers = arch.layers(request.model)
    scores = [arch.ffn_input_weight(layer).abs().sum(dim=1) for layer in layers]
    return [Importance(Dimension.FFN, scores, report={"scored_by": "prunekit-throwaway"})]
"""


def test_a_pip_installed_entry_point_plugin_is_listed_and_called(tmp_path):
    package = tmp_path / "prunekit-throwaway"
    package.mkdir()
    (package / "pyproject.toml").write_text(THROWAWAY_PYPROJECT)
    (package / "prunekit_throwaway.py").write_text(textwrap.dedent(THROWAWAY_MODULE))
    site = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--target", site, package)
    env = {**os.environ, "PYTHONPATH": str(site), "PRUNEKIT_NO_PROGRESS": "1"}

    listed = {row["name"]: row for row in json.loads(run(BIN / "core", "plugins", "list", "--json", env=env).stdout)}
    assert listed["throwaway"]["distribution"] == "prunekit-throwaway"
    assert listed["throwaway"]["version"] == "0.4.2"
    assert listed["throwaway"]["hooks"] == ["score_importance"]

    out = tmp_path / "run"
    report = json.loads(run(BIN / "core", "run", "--model", "tiny-llama", "--plugins", "throwaway",
                            "--ratio", "0.5", "--output", out, "--json", env=env).stdout)
    assert report["pruning"] == {"ffn": {"scored_by": "prunekit-throwaway"}}
    assert report["params"]["after"] < report["params"]["before"]

    blocked = {**env, "PRUNEKIT_DISABLE_PLUGINS": "prunekit-throwaway"}
    listed = json.loads(run(BIN / "core", "plugins", "list", "--json", env=blocked).stdout)
    assert "throwaway" not in {row["name"] for row in listed}
    denied = subprocess.run([BIN / "core", "run", "--model", "tiny-llama", "--plugins", "throwaway"],
                            capture_output=True, text=True, env=blocked)
    assert denied.returncode == 2 and "unknown plugin 'throwaway'" in denied.stderr
