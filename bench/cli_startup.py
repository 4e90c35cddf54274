"""How long the ``core`` commands that load no model take, from process start to exit.

Listing plugins, ``--help`` and rejecting a bad option or config should answer at once: none of
them needs torch or transformers, which take seconds to import. Each command runs ``--repeats``
times as a fresh process (the installed ``core`` script, as a user starts it) after ``--warmup``
untimed runs; the table shows the median wall time with its range, and every run's exit code is
checked, so that an error path that stopped failing is not timed as a fast one.

    .venv/bin/python bench/cli_startup.py --label after
    PYTHONPATH=$BEFORE .venv/bin/python bench/cli_startup.py --label before  # an older tree's prunekit

The JSON (``--json``, default ``bench/results/cli-startup.json``) keeps one entry per ``--label``;
a rerun replaces that label's entry and leaves the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_JSON = Path(__file__).parent / "results" / "cli-startup.json"
BAD_CONFIG = "model: tiny-llama\nplugins: [random]\nratio: 1.5\n"


def commands(config: Path) -> list[tuple[str, list[str], int]]:
    """(name, arguments of ``core``, expected exit code) of every command timed."""
    return [
        ("core --help", ["--help"], 0),
        ("core plugins list", ["plugins", "list"], 0),
        ("core plugins show perplexity", ["plugins", "show", "perplexity"], 0),
        ("misspelt plugin option", ["run", "--model", "tiny-llama", "--plugins", "random", "--ratio", "0.3",
                                    "-o", "perplexity.windos=3"], 2),
        ("unknown plugin", ["run", "--model", "tiny-llama", "--plugins", "randm", "--ratio", "0.3"], 2),
        ("bad config file", ["run", "--config", str(config)], 2),
    ]


def core_script() -> Path:
    """The ``core`` script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "core"
    found = beside if beside.is_file() else shutil.which("core")
    if found is None:
        raise SystemExit("no `core` script: install prunekit into this environment first")
    return Path(found)


def time_command(core: Path, arguments: list[str], expected: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([str(core), *arguments], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != expected:
        raise SystemExit(f"core {' '.join(arguments)} exited {result.returncode}, expected {expected}:\n"
                         f"{result.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="Timed runs per command (the median is reported).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed runs per command first.")
    parser.add_argument("--label", default="current", help="Name of this measurement in the JSON (e.g. before, after).")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="Results file.")
    args = parser.parse_args()

    core = core_script()
    env = {**os.environ, "PRUNEKIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    rows = []
    print(f"{'command':<30} {'median':>9}  (range), {args.repeats} runs each")
    with tempfile.TemporaryDirectory(prefix="prunekit-bench-") as folder:
        config = Path(folder) / "bad.yaml"
        config.write_text(BAD_CONFIG)
        for name, arguments, expected in commands(config):
            for _ in range(args.warmup):
                time_command(core, arguments, expected, env)
            runs = [time_command(core, arguments, expected, env) for _ in range(args.repeats)]
            rows.append({
                "command": name,
                "arguments": ["core", *(config.name if a == str(config) else a for a in arguments)],
                "exit_code": expected,
                "median_s": round(statistics.median(runs), 3),
                "min_s": round(min(runs), 3),
                "max_s": round(max(runs), 3),
                "runs_s": [round(run, 3) for run in runs],
            })
            print(f"{name:<30} {rows[-1]['median_s']:>7.2f} s  ({rows[-1]['min_s']:.2f}–{rows[-1]['max_s']:.2f})",
                  flush=True)

    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    results[args.label] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "repeats": args.repeats,
        "warmup": args.warmup,
        "commands": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json} ({args.label})")


if __name__ == "__main__":
    main()
