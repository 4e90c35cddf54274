"""Commands that load no model answer at once: they import neither torch nor the other heavy libraries.

Each command runs in a fresh interpreter through the console script's entry point
(``prunekit.cli:main``, pyproject.toml's ``[project.scripts]``), so no module an earlier test
imported can hide an import; the interpreter then reports which heavy libraries were loaded. How
long the commands take is measured by ``bench/cli_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "lm_eval", "optuna", "datasets", "accelerate", "scipy", "numpy")
"""Each takes from a quarter of a second (numpy) to seconds (torch) to import."""

WRAPPER = """
import json, sys
from prunekit.cli import main

report, sys.argv = sys.argv[1], ["core", *sys.argv[2:]]
try:
    main()
    code = 0
except SystemExit as exit:
    code = exit.code or 0
with open(report, "w") as file:
    json.dump({"code": code, "imported": [name for name in %r if name in sys.modules]}, file)
""" % (HEAVY,)


def core(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess[str], int, list[str]]:
    """Run ``core ARGS`` in a fresh interpreter: the process, its exit code and the heavy libraries it imported."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PRUNEKIT_NO_PROGRESS": "1"}
    result = subprocess.run([sys.executable, "-c", WRAPPER, str(report), *args],
                            capture_output=True, text=True, env=env, timeout=120)
    assert report.is_file(), result.stderr
    found = json.loads(report.read_text())
    return result, found["code"], found["imported"]


def explain(imported: list[str]) -> str:
    return (f"imported {', '.join(imported)}; find the module that does with "
            "`python -X importtime -m prunekit plugins list` and move the import into the function that needs it")


@pytest.mark.parametrize("args", [["plugins", "list"], ["--help"], ["plugins", "show", "perplexity"]],
                         ids=["plugins list", "help", "plugins show"])
def test_commands_that_load_no_model_import_no_heavy_library(tmp_path, args):
    result, code, imported = core(tmp_path, *args)
    assert code == 0, result.stderr
    assert result.stdout.strip()
    assert not imported, explain(imported)


RUN = ["run", "--model", "tiny-llama", "--plugins"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*RUN, "random", "--ratio", "0.3", "-o", "perplexity.windos=3"], "options.perplexity.windos: Extra inputs"),
        ([*RUN, "randm", "--ratio", "0.3"], "unknown plugin 'randm'"),
        ([*RUN, "random", "--ratio", "1.5"], "ratio: Input should be less than 1"),
    ],
    ids=["misspelt option", "unknown plugin", "bad value"],
)
def test_a_rejected_run_is_told_in_one_line_without_heavy_libraries(tmp_path, args, message):
    """Every plugin's settings are checked before the model loads, and the model's libraries with it."""
    assert_rejected(*core(tmp_path, *args), message)


def test_a_bad_config_file_is_told_in_one_line_without_heavy_libraries(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: tiny-llama\nplugins: [random]\nratio: 0.3\noptions: {random: {dimension: [ffn]}}\n")
    assert_rejected(*core(tmp_path, "run", "--config", str(config)), "options.random.dimension: Extra inputs")


def assert_rejected(result: subprocess.CompletedProcess[str], code: int, imported: list[str], message: str) -> None:
    assert code == 2, result.stderr
    assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not imported, explain(imported)
