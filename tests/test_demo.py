"""``make demo`` as a new user meets it: a copy of the repository with no ``../shared`` beside it
and no Hub, the README's first command. Slow: it compresses the built-in SmolLM2-135M (minutes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_make_demo_in_a_fresh_copy_reports_quality_speed_and_text_offline(tmp_path):
    copy = tmp_path / "prunekit"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        if (PROJECT_ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, copy / name)
    assert not (copy.parent / "shared").exists()
    (copy / ".venv").symlink_to(Path(sys.executable).parents[1])  # set-up done: the venv this suite runs in
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "PRUNEKIT_DATA"))}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # no Hub: any request would be refused (and retried, and logged)
    result = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "demo"], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"perplexity\s+│\s+[\d.]+\s+│\s+[\d.]+", out), out
    assert re.search(r"Speedup \(after / before, median tokens/s\): decode [\d.]+×, prefill [\d.]+×; ideal [\d.]+×", out), out
    assert re.search(r"before: '.+'\n\s+after: '.+'", out), out
    assert "Retry" not in result.stderr and "huggingface.co" not in result.stdout + result.stderr
    [run] = (copy / "runs").iterdir()
    card = (run / "model" / "README.md").read_text()
    assert card.startswith("---\n") and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "activation" in card and "refit" in card and "lora" in card
