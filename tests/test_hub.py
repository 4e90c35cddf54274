"""prunekit is offline unless a Hub name is used, and an unreachable Hub fails once, fast, in one line."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest

from prunekit import hub

CORE = Path(sys.executable).parent / "core"
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """A process that has not decided yet, with no offline variable set; restored afterwards."""
    saved = dict(os.environ)
    flag = huggingface_hub.constants.HF_HUB_OFFLINE
    monkeypatch.setattr(hub, "_state", {"ours": False, "reason": None, "probed": False})
    for name in hub.OFFLINE_VARIABLES:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)
    huggingface_hub.constants.HF_HUB_OFFLINE = flag


def test_a_command_starts_offline_and_an_unreachable_hub_keeps_it_so():
    hub.offline_by_default()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ["HF_ENDPOINT"] = CLOSED_PORT
    reason = hub.reach("model 'org/name'")
    assert reason and "refused" in reason.lower()
    assert huggingface_hub.constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_reachable_hub_lifts_offline_mode_for_the_rest_of_the_process():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hub.offline_by_default()
        os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"  # answers 501: reachable
        assert hub.reach("model 'org/name'") is None
    finally:
        server.shutdown()
    assert "HF_HUB_OFFLINE" not in os.environ and not huggingface_hub.constants.HF_HUB_OFFLINE
    hub.offline_by_default()  # the next command starts offline again
    assert huggingface_hub.constants.HF_HUB_OFFLINE


def test_the_users_own_offline_setting_is_never_changed():
    os.environ["HF_HUB_OFFLINE"] = "0"
    hub.offline_by_default()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    os.environ["HF_ENDPOINT"] = CLOSED_PORT
    assert hub.reach("model 'org/name'") is None  # not probed: their setting decides


def environment(**extra: str) -> dict[str, str]:
    """A fresh process's: none of the Hub, datasets and transformers settings that commands run
    in-process by earlier tests left in this one (offline mode, verbosity, progress bars)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, "PRUNEKIT_NO_PROGRESS": "1", "HF_ENDPOINT": CLOSED_PORT, **extra}


def test_an_uncached_hub_model_without_a_hub_is_one_line_exit_2_with_no_retries(tmp_path):
    result = subprocess.run(
        [CORE, "run", "--model", "prunekit-tests/no-such-model", "--plugins", "random", "--ratio", "0.3",
         "--output", tmp_path / "run"],
        capture_output=True, text=True, timeout=120, env=environment(HF_HOME=str(tmp_path / "hf")),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Retry" not in result.stderr
    assert "not in the local Hugging Face cache, and the Hub is unreachable" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_uncached_hub_dataset_without_a_hub_is_one_line_exit_2(tmp_path):
    result = subprocess.run(
        [CORE, "eval", "--model", "tiny-llama", "--plugins", "perplexity", "-o", "perplexity.source=prunekit-tests/no-such-text"],
        capture_output=True, text=True, timeout=120, env=environment(HF_HOME=str(tmp_path / "hf")),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Retry" not in result.stderr
    assert "the Hub is unreachable" in result.stderr and "prunekit-tests/no-such-text" in result.stderr


@pytest.mark.parametrize(("flags", "shown"), [([], 0), (["-vv"], 1)])
def test_a_huggingface_hub_warning_is_hidden_by_default_and_printed_once_with_vv(flags, shown):
    """huggingface_hub logs through its own handler; through ours too it would print each line twice."""
    script = (
        "import sys\nfrom prunekit.cli import main\n"
        f"sys.argv = ['core', *{flags!r}, 'plugins', 'list']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "from huggingface_hub.utils import logging\nlogging.get_logger('huggingface_hub.file_download').warning('hub says this once')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=environment())
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("hub says this once") == shown, result.stderr
