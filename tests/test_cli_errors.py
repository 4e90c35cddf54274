"""Every usage error of the ``core`` script is one line on stderr and exit 2, click's own parse
errors included (a bad value, an unknown option or command, a missing option, an extra argument);
help, ``--version`` and the commands' own exit codes are unchanged.

Each case calls the console script's entry point, ``prunekit.cli:main``, in-process (the ``core``
fixture, tests/conftest.py): click's ``CliRunner`` would call the Typer app directly and miss how
``main`` reports click's errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prunekit import __version__, manager


@pytest.mark.parametrize(
    ("args", "fragments", "command"),
    [
        (["run", "--model", "tiny-llama", "--ratio", "abc"], ["Invalid value for '--ratio'", "valid number"],
         "core run"),
        (["run", "--no-such-option"], ["No such option: --no-such-option"], "core run"),
        (["run", "--rato", "0.3"], ["No such option: --rato", "--ratio"], "core run"),
        (["no-such-command"], ["No such command 'no-such-command'"], "core"),
        (["eval", "--limit", "x"], ["Invalid value for '--limit'", "valid integer"], "core eval"),
        (["search", "--batches", "many"], ["Invalid value for '--batches'"], "core search"),
        (["search", "--latency-kind", "sideways"], ["Invalid value for '--latency-kind'", "sideways"], "core search"),
        (["laws", "predict", "--ratio", "0.3"], ["Missing option '--fit'"], "core laws predict"),
        (["laws", "no-such-command"], ["No such command 'no-such-command'"], "core laws"),
        (["plugins", "show"], ["Missing argument 'name'"], "core plugins show"),
        (["plugins", "show", "random", "extra"], ["unexpected extra argument", "extra"], "core plugins show"),
        (["-v", "--no-such-option"], ["No such option: --no-such-option"], "core"),
    ],
    ids=["bad float", "unknown option", "misspelt option", "unknown command", "bad int", "search bad int",
         "search bad choice", "missing option", "laws unknown command", "missing argument", "extra argument",
         "unknown top-level option"],
)
def test_a_parse_error_is_one_line_and_exit_2(core, args, fragments, command):
    code, out, err = core(*args)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    # the program's name is click's guess: core for the script, python -m pytest here
    assert lines[0].startswith("Error: ") and lines[0].endswith(f"{command.removeprefix('core')} --help')"), lines[0]
    assert " (see '" in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_our_own_usage_errors_keep_their_one_line(core):
    code, out, err = core("run", "--model", "tiny-llama", "--plugins", "randm", "--ratio", "0.3")
    assert code == 2 and out == ""
    assert err.startswith("Error: unknown plugin 'randm'") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["laws", "sweep", "--help"], ["plugins", "--help"]])
def test_help_exits_0_on_stdout(core, args):
    code, out, err = core(*args)
    assert code == 0, err
    assert "Usage" in out and err == ""


def test_version_exits_0(core):
    assert core("--version") == (0, f"prunekit {__version__}\n", "")


@pytest.mark.parametrize("args", [[], ["plugins"], ["laws"]], ids=["core", "plugins", "laws"])
def test_a_group_without_a_command_shows_its_help(core, args):
    code, out, err = core(*args)
    assert code == 2  # click's exit code for a group called without arguments
    assert "Usage" in out and "Commands" in out and err == ""


def test_a_command_succeeds_with_exit_0(core):
    code, out, err = core("plugins", "list")
    assert code == 0, err
    assert "random" in out


def test_ctrl_c_in_a_command_exits_130_with_one_line(core, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(manager, "get_plugins", interrupted)
    code, out, err = core("plugins", "list")
    assert code == 130
    assert err == "Interrupted: nothing of this command was saved.\n"


def test_the_installed_script_names_itself_in_the_line():
    script = Path(sys.executable).parent / "core"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    result = subprocess.run([script, "run", "--model", "tiny-llama", "--ratio", "abc"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("Error: Invalid value for '--ratio': Input should be a valid number, unable to parse "
                             "string as a number (see 'core run --help')\n")
