"""When prunekit touches the Hugging Face Hub: only where the user named a Hub model or dataset.

Every command (and :func:`prunekit.run`) starts offline (:func:`offline_by_default`, unless the user set one of
:data:`OFFLINE_VARIABLES`), so a built-in model, a local directory and the packaged default text never reach for the
network, nor do the lookups transformers, datasets and lm-eval make on their own. Where a Hub name is used,
:func:`reach` asks the Hub once, with a short timeout: if it answers, the process goes online; if not, the load reads
the local cache or fails at once, naming the reason, where huggingface_hub would retry each file five times (30 s).
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
"""Set by the user, any of these decides; prunekit then neither sets nor lifts offline mode."""
PROBE_SECONDS = 5.0
DEFAULT_ENDPOINT = "https://huggingface.co"

_state: dict[str, object] = {"ours": False, "reason": None, "probed": False}


def offline_by_default() -> None:
    """Go offline unless the user chose: called before anything reads the Hub settings."""
    if any(name in os.environ for name in OFFLINE_VARIABLES) and not _state["ours"]:
        return
    _state.update(ours=True, probed=False, reason=None)
    _set_offline(True)


def reach(what: str) -> str | None:
    """Go online for ``what`` (a Hub model, dataset or task) if the Hub answers, or where the user chose the mode
    themselves: ``None``. Otherwise the reason it is unreachable, for the caller's error if the cache lacks ``what``."""
    if not _state["ours"]:
        return None
    if not _state["probed"]:
        _state.update(probed=True, reason=_probe())
        if _state["reason"] is None:
            _set_offline(False)
        else:
            log.info("the Hugging Face Hub is unreachable (%s); %s is read from the local cache",
                     _state["reason"], what)
    return _state["reason"]  # type: ignore[return-value]


def _probe() -> str | None:
    """One HEAD request to the Hub's endpoint; any HTTP answer means it is reachable."""
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return " ".join(str(reason).split()) or type(exc).__name__
    return None


def _set_offline(offline: bool) -> None:
    """The environment (read when huggingface_hub and datasets are imported, and by subprocesses) and, where they are
    already imported, the flags they read at each call."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if offline:
            os.environ[name] = "1"
        else:
            os.environ.pop(name, None)
    if "huggingface_hub.constants" in sys.modules:
        sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = offline
    if "datasets.config" in sys.modules:
        config = sys.modules["datasets.config"]
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = offline
