"""Saving and finding learned policies: safetensors weights beside a small JSON of their settings.

A policy depends on the model's weights and the training settings, never on the ratio it will be
applied at, so it is cached under ``$PRUNEKIT_CACHE/policies/<model fingerprint>/<settings
hash>.safetensors`` and any later run on the same weights with the same settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prunekit import files
from prunekit.errors import UsageError
from prunekit.plugins.prunenet.policy import KeepPolicy

FORMAT = 2
"""Bumped whenever the policy's parameterization or training changes meaning; part of the key."""


@dataclass
class StoredPolicy:
    policy: KeepPolicy
    meta: dict[str, Any]
    """``format``, ``hidden``, ``width``, ``fingerprint``, ``settings``, ``train_ratio``,
    ``learning_curve``, ``best_episode``, ``train_seconds``."""
    path: Path | None
    """``None`` for a freshly trained policy that was not cached."""


def cached_path(fingerprint: str, settings: dict[str, object]) -> Path:
    """Where the policy for this model and these training settings lives in the cache."""
    blob = json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode()
    return files.cache_root() / "policies" / fingerprint / f"{hashlib.sha256(blob).hexdigest()[:16]}.safetensors"


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save(policy: KeepPolicy, meta: dict[str, Any], path: Path) -> None:
    """Write both files under temporary names and rename them into place, JSON last, so a policy
    whose JSON exists is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.staged(path) as staging:
        save_file({name: value.detach().cpu().contiguous() for name, value in policy.state_dict().items()}, staging)
    files.write_json(_meta_path(path), {"format": FORMAT, **meta}, indent=2)


def exists(path: Path) -> bool:
    return path.is_file() and _meta_path(path).is_file()


def load(path: Path, hidden: int) -> StoredPolicy:
    """The policy at ``path`` for a model of ``hidden`` size; anything unusable is bad input."""
    meta_path = _meta_path(path)
    if path.suffix != ".safetensors":
        raise UsageError(f"PruneNet policy must be a .safetensors file (with its .json beside it): {path}")
    if not path.is_file():
        raise UsageError(f"PruneNet policy not found: {path}")
    if not meta_path.is_file():
        raise UsageError(f"PruneNet policy {path} has no settings file {meta_path.name} beside it")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(path)
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise UsageError(f"cannot read PruneNet policy {path}: {' '.join(str(exc).split())}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UsageError(f"PruneNet policy {path} has format {found!r}; this prunekit reads format {FORMAT}")
    try:
        policy = KeepPolicy(int(meta["hidden"]), int(meta["width"]))
        policy.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"PruneNet policy {path} does not match its settings file: {str(exc).splitlines()[0]}") from exc
    if policy.hidden != hidden:
        raise UsageError(
            f"PruneNet policy {path} was trained for hidden size {policy.hidden}; this model's is {hidden}"
        )
    return StoredPolicy(policy, meta, path)
