"""Where prunekit keeps its files, and files written whole or not at all.

:func:`cache_root` holds what prunekit computes once and reuses (converted models, tokenized text, baselines,
policies); :func:`shared_data_dir` is the benchmark data it reads. Everything is written under a staging name beside
its target and renamed into place, so an interrupted write never leaves a half-written file or directory that looks
complete; :data:`STAGED` matches those names, so that a rerun can sweep what a killed one left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CACHE_ENV = "PRUNEKIT_CACHE"
DATA_ENV = "PRUNEKIT_DATA"


def cache_root() -> Path:
    """``$PRUNEKIT_CACHE``, else ``~/.cache/prunekit``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prunekit")


def shared_data_dir() -> Path | None:
    """The benchmark data folder (zero-shot task files): ``$PRUNEKIT_DATA``, else ``../shared/data`` from the working
    directory (the project checkout's neighbour on the development machines), else ``None``."""
    configured = os.environ.get(DATA_ENV)
    candidate = Path(configured) if configured else Path.cwd().parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


STAGED = re.compile(r"^\..+\.(tmp|old)-\d+$")
"""The names :func:`staging` gives: a target's staging file or directory, and (``old``) a directory being replaced."""


def staging(target: Path, kind: str = "tmp") -> Path:
    """The name ``target`` is written under before it is renamed into place."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}")


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target``; a directory replaces an existing one (which a rename alone cannot), moved
    aside first and removed after."""
    if source.is_dir() and target.is_dir():
        replaced = staging(target, "old")
        os.replace(target, replaced)
        os.replace(source, target)
        shutil.rmtree(replaced)
    else:
        os.replace(source, target)


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """The staging path of ``target`` (cleared first): what the block writes there, a file or a directory, is renamed
    onto ``target`` when the block finishes, and removed if it fails."""
    path = staging(target)
    remove(path)
    try:
        yield path
        replace(path, target)
    finally:
        remove(path)


def write_text(target: Path, text: str) -> None:
    with staged(target) as path:
        path.write_text(text)


def write_bytes(target: Path, data: bytes) -> None:
    with staged(target) as path:
        path.write_bytes(data)


def write_json(target: Path, content: Any, **dump: Any) -> None:
    """``content`` as JSON (``dump``: :func:`json.dumps`'s options) with a final newline."""
    write_text(target, json.dumps(content, **dump) + "\n")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, target: Path) -> None:
    """``save_pretrained`` (safetensors) with the tokenizer, renamed into ``target`` when complete (replacing a
    rerun's earlier model)."""
    with staged(target) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
