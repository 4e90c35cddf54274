"""Third-party plugins as their authors and users meet them.

Fast tests: ``core plugins list --hooks``, ``core plugins show``, ``PRUNEKIT_TRACE_PLUGINS``.
Slow tests install real packages with pip: broken plugins, the contrib packages into a clean
environment (install, run, uninstall), and the walk-through of docs/plugins.md command by command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from conftest import PROJECT_ROOT
from prunekit import hookimpl, manager
from prunekit.cli import app
from prunekit.manager import Plugins

CONTRIB = PROJECT_ROOT / "contrib"
PLUGINS_DOC = PROJECT_ROOT / "docs" / "plugins.md"


def core(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    for variable in (manager.LOAD_ENV, manager.DISABLE_ENV, "PRUNEKIT_TRACE_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry built now (seeing the environment and distributions of this test), used by the CLI."""

    def build() -> Plugins:
        registry = Plugins()
        monkeypatch.setattr(manager, "get_plugins", lambda: registry)
        return registry

    return build


# --- core plugins list --hooks ----------------------------------------------------------------


class Early:
    @hookimpl(tryfirst=True)
    def score_importance(self, request):
        return None


class Late:
    @hookimpl
    def score_importance(self, request):
        return None


def test_list_hooks_names_the_plugins_of_every_hook_in_call_order(register_plugin):
    register_plugin(Early(), "early")
    register_plugin(Late(), "late")
    result = core("plugins", "list", "--hooks", "--json")
    assert result.exit_code == 0, result.output
    order = json.loads(result.stdout)
    assert list(order)[:4] == ["register_architectures", "plugin_options", "score_importance", "slice_layer"]
    assert order["score_importance"][:2] == ["early", "late"]  # tryfirst, then the last registered
    assert order["score_importance"][-1] == "random"  # the first built-in registered is asked last
    assert order["slice_layer"][-1] == "slicer"  # trylast: the core slicer answers when no one else does

    table = core("plugins", "list", "--hooks").stdout
    assert re.search(r"score_importance\s+│ early → late →", table)
    assert re.search(r"recover\s+│ .*refit.*\(each selected, in --plugins", table)  # a chain, not pluggy's order


# --- core plugins show ------------------------------------------------------------------------


def test_show_gives_source_hooks_and_settings_with_defaults():
    result = core("plugins", "show", "random", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["source"], shown["module"], shown["hooks"]) == (
        "builtin", "prunekit.plugins.random_pruner", ["plugin_options", "score_importance"])
    assert shown["file"].endswith("random_pruner.py")
    assert shown["summary"].startswith("``random``: keep")
    [dimensions] = shown["settings"]
    assert dimensions == {"name": "dimensions", "type": "list[Dimension]", "required": False, "default": ["ffn"],
                          "description": "Dimensions to slice: ffn, heads and/or layers (depth)."}
    assert shown["settings_schema"]["additionalProperties"] is False

    table = core("plugins", "show", "random").stdout
    assert "options.random in a config file, or -o random.KEY=VALUE" in table
    assert re.search(r"dimensions\s+│ list\[Dimension\]\s+│ \[\"ffn\"\]", table)


class RequiredSettings(BaseModel):
    path: Path = Field(description="Where the scores are [cached].")
    steps: int = 3


class WithSettings:
    """A test plugin with one required setting.

    Only the first paragraph is the summary."""

    @hookimpl
    def plugin_options(self):
        return RequiredSettings


class WithoutSettings:
    @hookimpl
    def evaluate(self, request):
        return None


def test_show_marks_required_settings_and_plugins_without_any(register_plugin):
    register_plugin(WithSettings(), "with-settings")
    register_plugin(WithoutSettings(), "without-settings")
    shown = json.loads(core("plugins", "show", "with-settings", "--json").stdout)
    assert shown["summary"] == "A test plugin with one required setting."
    assert shown["settings"] == [
        {"name": "path", "type": "Path", "required": True, "default": None, "description": "Where the scores are [cached]."},
        {"name": "steps", "type": "int", "required": False, "default": 3, "description": None},
    ]
    table = core("plugins", "show", "with-settings").stdout
    assert "(required)" in table and "[cached]" in table  # brackets are text, not markup

    result = core("plugins", "show", "without-settings")
    assert result.exit_code == 0 and "settings: none declared" in result.stdout
    assert json.loads(core("plugins", "show", "without-settings", "--json").stdout)["settings_schema"] is None


def test_show_of_an_unknown_plugin_is_a_one_line_error_listing_the_installed_ones():
    result = core("plugins", "show", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: unknown plugin 'nope'; installed: ") and result.stderr.count("\n") == 1
    assert "random" in result.stderr


def test_show_of_a_plugin_that_failed_to_load_names_its_package_and_error(installed_distribution, fresh_registry):
    installed_distribution("prunekit-broken", "pk_broken", "raise ImportError('needs torchvision')\n",
                           entry_point="broken", version="0.3")
    fresh_registry()
    result = core("plugins", "show", "broken")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: plugin 'broken' (from prunekit-broken 0.3) failed to load: ImportError: needs torchvision")


# --- PRUNEKIT_TRACE_PLUGINS -------------------------------------------------------------------


def trace_lines(text: str) -> list[str]:
    return re.findall(r"^prunekit trace: (hook \w+ \[[^\]]*\] \d+\.\d{3} s.*)$", text, flags=re.MULTILINE)


def test_trace_logs_every_hook_call_with_its_plugins_and_duration(monkeypatch, fresh_registry, tmp_path):
    monkeypatch.setenv("PRUNEKIT_TRACE_PLUGINS", "1")
    fresh_registry()
    result = core("run", "--model", "tiny-llama", "--plugins", "random,perplexity", "--ratio", "0.5",
                  "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    lines = trace_lines(result.stderr)
    assert any(line.startswith("hook register_architectures [") for line in lines)  # no built-in implements it
    assert sum(line.startswith("hook score_importance [random] ") for line in lines) == 1
    assert sum(line.startswith("hook slice_layer [slicer] ") for line in lines) == 2  # one per layer
    assert not any(line.startswith("hook recover ") for line in lines)  # no recovery plugin selected
    assert lines[-3].startswith("hook slice_layer [slicer] ")
    assert lines[-2].startswith("hook evaluate [perplexity] ")  # the compressed model
    assert lines[-1].startswith("hook render_report [report] ")


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_no_trace_unless_asked(value, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_TRACE_PLUGINS", value)
    assert Plugins().hooks([]).architectures() == []  # the call happens; no built-in registers an adapter
    assert trace_lines(capsys.readouterr().err) == []


class Failing:
    @hookimpl
    def evaluate(self, request):
        raise ValueError("no data")


def test_a_hook_that_raises_is_traced_as_raising(monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_TRACE_PLUGINS", "on")
    registry = Plugins()
    registry.register(Failing(), "failing")
    with pytest.raises(ValueError):
        registry.hooks(["failing"]).evaluate(request=None)
    assert registry.hooks([]).architectures() == []  # and the calls after it are traced as before
    first, second = trace_lines(capsys.readouterr().err)
    assert re.fullmatch(r"hook evaluate \[failing\] \d+\.\d{3} s, raised ValueError", first)
    assert re.fullmatch(r"hook register_architectures \[no plugin\] \d+\.\d{3} s", second)


# --- real packages, installed with pip ----------------------------------------------------------


def run(*args: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if check:
        assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


BROKEN_PACKAGES = {
    "prunekit-broken-import": ("broken_import", "import torchvision_that_is_not_installed\n"),
    "prunekit-bad-signature": ("bad_signature", textwrap.dedent("""
        from prunekit import hookimpl

        @hookimpl
        def score_importance(request, ratio):
            return None
        """)),
}


def write_package(root: Path, dist: str, entry_point: str, source: str) -> Path:
    module = dist.replace("-", "_")
    package = root / dist
    package.mkdir(parents=True)
    (package / f"{module}.py").write_text(source)
    (package / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"

        [project.entry-points.prunekit]
        {entry_point} = "{module}"
        """))
    return package


@pytest.mark.slow
def test_broken_plugins_installed_by_pip_are_reported_by_name_and_fail_only_runs_that_ask_for_them(tmp_path):
    site = tmp_path / "site"
    for dist, (entry_point, source) in BROKEN_PACKAGES.items():
        package = write_package(tmp_path / "src", dist, entry_point, source)
        run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
            "--target", site, package)
    env = {**os.environ, "PYTHONPATH": str(site), "PRUNEKIT_NO_PROGRESS": "1"}
    bin_dir = Path(sys.executable).parent

    listed = {row["name"]: row for row in json.loads(run(bin_dir / "core", "plugins", "list", "--json", env=env).stdout)}
    assert listed["broken_import"]["error"] == "ModuleNotFoundError: No module named 'torchvision_that_is_not_installed'"
    assert listed["bad_signature"]["distribution"] == "prunekit-bad-signature"
    assert listed["bad_signature"]["error"].startswith("PluginValidationError: Plugin 'bad_signature' for hook 'score_importance'")

    ok = run(bin_dir / "core", "run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.5",
             "--output", tmp_path / "run", env=env)
    assert "'broken_import'" in ok.stderr and "'bad_signature'" in ok.stderr  # warned about, by name

    for entry_point in ("broken_import", "bad_signature"):
        denied = run(bin_dir / "core", "run", "--model", "tiny-llama", "--plugins", entry_point, "--ratio", "0.5",
                     check=False, env=env)
        assert denied.returncode == 2, denied.stderr
        last = denied.stderr.splitlines()[-1]
        assert last.startswith(f"Error: plugin '{entry_point}' (from prunekit-{entry_point.replace('_', '-')} 0.1.0) "
                               "failed to load: ")


def clean_environment(root: Path) -> dict[str, str]:
    """A fresh virtual environment that has what ``make setup`` installs, prunekit included, but
    none of the contrib packages: the development venv's packages are linked in one by one (so
    torch is not installed again), except every file of a contrib distribution.

    Returns the environment for subprocesses: its ``bin`` first on PATH, with ``core``, ``pip``
    and ``pytest`` of its own, and pip kept offline (no index; builds use the installed setuptools).
    """
    venv.create(root, with_pip=False, symlinks=True)
    python = root / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    hidden = [p.name.replace("-", "_") for p in CONTRIB.iterdir() if (p / "pyproject.toml").is_file()]
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if not any(name in entry.name.replace("-", "_") for name in hidden):
            (site / entry.name).symlink_to(entry)
    for script in ("core", "prunekit", "pip", "pytest"):  # console scripts, pointed at the new interpreter
        body = (Path(sys.executable).parent / script).read_text().split("\n", 1)[1]
        (root / "bin" / script).write_text(f"#!{python}\n{body}")
        (root / "bin" / script).chmod(0o755)
    return {**os.environ, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(root),
            "PRUNEKIT_NO_PROGRESS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def checkout_with(root: Path, *packages: str) -> Path:
    """A directory laid out like a prunekit checkout with clean copies of the given contrib packages."""
    for package in packages:
        shutil.copytree(CONTRIB / package, root / "contrib" / package,
                        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "build", "*.egg-info"))
    return root


def plugin_names(env: dict[str, str], cwd: Path) -> dict[str, str]:
    rows = json.loads(run("core", "plugins", "list", "--json", env=env, cwd=cwd).stdout)
    return {row["name"]: row["source"] for row in rows}


@pytest.mark.slow
def test_shortgpt_from_a_clean_setup_removes_6_of_30_layers_into_a_stock_checkpoint(tmp_path, shared_data):
    from transformers import AutoModelForCausalLM

    from prunekit.models import load_model

    env = {**clean_environment(tmp_path / "venv"), "PRUNEKIT_DATA": str(shared_data)}
    checkout = checkout_with(tmp_path / "checkout", "prunekit-shortgpt")
    assert "shortgpt" not in plugin_names(env, checkout)

    run("pip", "install", "./contrib/prunekit-shortgpt", env=env, cwd=checkout)
    assert plugin_names(env, checkout)["shortgpt"] == "prunekit-shortgpt 0.1.0"

    out = tmp_path / "run"
    report = json.loads(run("core", "run", "--model", "smollm2-135m", "--plugins", "shortgpt", "--ratio", "0.2",
                            "--output", out, "--json", env=env, cwd=checkout).stdout)
    removed = report["pruning"]["layers"]["removed_layers"]
    assert len(removed) == 6 and len(report["pruning"]["layers"]["block_influence"]) == 30
    assert report["stock"] is True

    pruned = AutoModelForCausalLM.from_pretrained(out / "model")  # stock transformers, no remote code
    assert pruned.config.num_hidden_layers == 24 and len(pruned.model.layers) == 24
    assert sum(p.numel() for p in pruned.parameters()) == report["params"]["after"]
    original = load_model("smollm2-135m").model
    kept = [index for index in range(30) if index not in removed]
    for new, old in enumerate(kept):  # the survivors, untouched, in their order
        for name, tensor in pruned.model.layers[new].state_dict().items():
            assert torch.equal(tensor.float(), original.model.layers[old].state_dict()[name].float()), (new, name)

    run("pip", "uninstall", "--yes", "prunekit-shortgpt", env=env, cwd=checkout)
    assert "shortgpt" not in plugin_names(env, checkout)
    denied = run("core", "run", "--model", "smollm2-135m", "--plugins", "shortgpt", "--ratio", "0.2",
                 check=False, env=env, cwd=checkout)
    assert denied.returncode == 2 and "unknown plugin 'shortgpt'" in denied.stderr


def walkthrough() -> list[str]:
    """The commands of the walk-through in docs/plugins.md: the console block that copies the template."""
    blocks = re.findall(r"```console\n(.*?)```", PLUGINS_DOC.read_text(), flags=re.DOTALL)
    [block] = [b for b in blocks if "cp -r contrib/prunekit-template" in b]
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


@pytest.mark.slow
def test_the_docs_walkthrough_from_copy_to_pip_install_to_core_run_works_as_written(tmp_path, shared_data):
    env = {**clean_environment(tmp_path / "venv"), "PRUNEKIT_DATA": str(shared_data)}  # offline evaluation
    checkout = checkout_with(tmp_path / "checkout", "prunekit-template")
    commands = walkthrough()
    assert any(c.startswith("pip install -e") for c in commands)
    assert any(c.startswith("core run") and "--plugins colnorm" in c for c in commands)

    script = "set -e\n" + "\n".join(f"echo '>>> {c}'\n{c}" for c in commands)
    result = run("bash", "-c", script, env=env, cwd=checkout, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    package = checkout / "prunekit-colnorm"
    assert json.loads((package / "runs" / "colnorm" / "report.json").read_text())["pruning"]["ffn"]["criterion"] == (
        "L1 norm of output-projection columns")
    assert re.search(r"source\s+prunekit-colnorm 0\.1\.0", result.stdout)
    assert re.search(r"\b5 passed\b", result.stdout)  # the copied tests, run against the renamed plugin
