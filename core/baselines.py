"""The uncompressed model's metrics, measured once and reused by later runs of the same model.

Repeated runs of one model (a ratio sweep, another pruner) would otherwise pay again for the deterministic, costly
"before" evaluation. Each evaluator's result is cached under ``files.cache_root()/baselines/<fingerprint>/`` keyed by
everything that could change it (:func:`cache_key`). Measured in every run instead: an evaluator that returned nothing
(a later run may succeed), latency (it depends on the machine's load, so both stages are timed in one process) and
in-process plugins, whose code has no identity across processes. ``PRUNEKIT_NO_BASELINE_CACHE=1``: no cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from prunekit import __version__, files
from prunekit.hooks import merge_metrics
from prunekit.manager import DEFAULT_PLUGINS
from prunekit.output import Baseline, package_versions
from prunekit.payloads import EvalRequest, Metrics

if TYPE_CHECKING:
    from prunekit.hooks import Hooks
    from prunekit.manager import Plugins

DISABLE_ENV = "PRUNEKIT_NO_BASELINE_CACHE"
LOCAL_TASKS = "local:"
KEYED_PACKAGES = ("torch", "transformers", "lm_eval", "datasets")
_ENTRY = TypeAdapter(Metrics)


def _code_identity(plugins: Plugins, name: str) -> str | None:
    """What identifies an evaluator's code across processes: its distribution's version, or for a built-in prunekit's
    version and its module's source; ``None`` for an in-process plugin."""
    info = next((info for info in plugins.infos() if info.name == name), None)
    if info is None:
        return None
    if info.distribution is not None:
        return f"{info.distribution} {info.version}"
    if name not in DEFAULT_PLUGINS:
        return None
    source = inspect.getsourcefile(plugins.pm.get_plugin(name))
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else "unknown"
    return f"prunekit {__version__} {digest}"


def _task_files(tasks: list[str]) -> list[tuple[str, int, int]]:
    """Size and modification time of every file under each ``local:DIR`` task folder."""
    files = []
    for entry in tasks:
        folder = Path(entry.removeprefix(LOCAL_TASKS)).expanduser()
        if entry.startswith(LOCAL_TASKS) and folder.is_dir():
            files += [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in sorted(folder.rglob("*")) if p.is_file()]
    return files


def cache_key(request: EvalRequest, evaluator: str, code: str, model_fingerprint: str) -> dict[str, Any]:
    """Everything that could change an evaluator's result on the uncompressed model."""
    config = request.config
    parameter = next(request.model.parameters())
    data = files.shared_data_dir()
    return {
        "fingerprint": model_fingerprint,
        "evaluator": evaluator,
        "code": code,
        "options": config.options.get(evaluator, {}),
        "tasks": config.tasks,
        "task_files": _task_files(config.tasks),
        "limit": config.limit,
        "seed": config.seed,
        "dtype": str(parameter.dtype),
        "device": parameter.device.type,
        "data": str(data.resolve()) if data else None,
        "versions": package_versions(KEYED_PACKAGES, python=False),
    }


def _entry_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return files.cache_root() / "baselines" / key["fingerprint"] / f"{key['evaluator']}-{digest}.json"


def _read(path: Path) -> Metrics | None:
    try:
        return _ENTRY.validate_python(json.loads(path.read_text())["metrics"])
    except (OSError, ValueError, KeyError):  # absent, or written by an incompatible version
        return None


def _write(path: Path, key: dict[str, Any], metrics: Metrics) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "key": key,
             "metrics": _ENTRY.dump_python(metrics, mode="json")}
    files.write_json(path, entry, indent=2, default=str)


def evaluate_before(hooks: Hooks, plugins: Plugins, request: EvalRequest) -> tuple[Metrics, Baseline]:
    """The uncompressed model's metrics: cached ones read back, the rest measured (and cached)."""
    from prunekit.models import fingerprint

    evaluators = hooks.evaluators()
    codes = {name: _code_identity(plugins, name) for name in evaluators}
    use_cache = os.environ.get(DISABLE_ENV, "") in ("", "0") and any(codes.values())
    model_fingerprint = fingerprint(request.model) if use_cache else None
    parts: list[Metrics] = []
    cached: list[str] = []
    measured: list[str] = []
    for name in evaluators:
        path = key = None
        if use_cache and codes[name] is not None:
            key = cache_key(request, name, codes[name], model_fingerprint)
            path = _entry_path(key)
            metrics = _read(path)
            if metrics is not None:
                cached.append(name)
                parts.append(metrics)
                continue
        metrics = hooks.evaluate_one(name, request)
        if metrics is None:
            continue
        measured.append(name)
        parts.append(metrics)
        if path is not None and not metrics.latency:
            _write(path, key, metrics)
    return merge_metrics(parts), Baseline(fingerprint=model_fingerprint, cached=cached, measured=measured)
