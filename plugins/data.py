"""Text for calibration, recovery training and perplexity, read with ``datasets`` and tokenized once.

A *source* is a local file (``.txt``/``.raw``/``.md`` read as one document, ``.json``/``.jsonl``
with a text field), a directory of such files, or a Hub dataset ``name[:config]`` loaded the
ordinary way where a network exists. A source may end in a token-range selector ``[a%:b%]``
(as in ``datasets``' split slicing, applied to the token stream), which is how one file serves
both evaluation and training without overlap: perplexity reads ``wikitext2.test.raw[:50%]``,
recovery trains on ``wikitext2.test.raw[50%:]`` (the copy shipped in the package: :func:`default_text`).

Documents are joined with a blank line and tokenized once per (tokenizer, source) into a token
stream cached as safetensors under ``$PRUNEKIT_CACHE/tokens``; :func:`windows` and
:func:`sample_windows` cut fixed-length samples from it.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from prunekit import files, hub
from prunekit.files import shared_data_dir
from prunekit.errors import UsageError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_TEXT",
    "EVALUATION_HALF",
    "TRAINING_HALF",
    "default_text",
    "parse_source",
    "check_local_source",
    "load_texts",
    "token_stream",
    "windows",
    "sample_windows",
    "shared_data_dir",
]

TEXT_SUFFIXES = (".txt", ".raw", ".md", ".text")
JSON_SUFFIXES = (".json", ".jsonl")
RANGE = re.compile(r"^(?P<source>.+?)\[(?P<start>\d+(?:\.\d+)?)?%?:(?P<end>\d+(?:\.\d+)?)?%?\]$")
SEPARATOR = "\n\n"
DEFAULT_TEXT = "wikitext2.test.raw"
"""WikiText-2's raw test split, byte-exact, shipped in ``prunekit/plugins/text`` with its CC BY-SA 3.0
attribution and licence: the default of every text option."""
EVALUATION_HALF = "[:50%]"
TRAINING_HALF = "[50%:]"
"""Perplexity reads the first half of :data:`DEFAULT_TEXT`; calibration and recovery the second."""


def default_text(half: str) -> str:
    """``half`` of the packaged :data:`DEFAULT_TEXT` as a source. Packaged rather than fetched, so
    that the defaults need no network and no data folder: the same bytes as the benchmark data's
    copy, so a figure measured with either is the same figure."""
    return f"{Path(str(resources.files('prunekit.plugins') / 'text' / DEFAULT_TEXT))}{half}"


def parse_source(source: str) -> tuple[str, float, float]:
    """``"file.raw[50%:]"`` → ``("file.raw", 0.5, 1.0)``; no selector means the whole stream."""
    match = RANGE.match(source)
    if not match:
        return source, 0.0, 1.0
    start = float(match["start"] or 0) / 100
    end = float(match["end"] or 100) / 100
    if not 0 <= start < end <= 1:
        raise UsageError(f"data source {source!r}: the range must satisfy 0% <= start < end <= 100%")
    return match["source"], start, end


def check_local_source(source: str | None) -> str | None:
    """A pydantic validator's body for a text-source option: a malformed token range, or a local
    path (one starting with ``/``, ``.`` or ``~``) that does not exist, is a ``ValueError`` naming
    it, raised when the options are read, before any model loads. Hub names pass unchecked."""
    if source is None:
        return source
    try:
        base, _, _ = parse_source(source)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    if base.startswith(("/", ".", "~")) and not Path(base).expanduser().exists():
        raise ValueError(f"data file not found: {base}")
    return source


def _local_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"data directory {path} holds no {', '.join(TEXT_SUFFIXES + JSON_SUFFIXES)} files")
    return files


def load_texts(source: str, *, split: str = "train", text_field: str = "text") -> list[str]:
    """The documents of ``source`` (without a range selector) as a list of strings."""
    import datasets

    path = Path(source).expanduser()
    unreachable = None
    try:
        if path.exists():
            files = _local_files(path)
            kinds = {"json" if f.suffix in JSON_SUFFIXES else "text" for f in files}
            if len(kinds) > 1:
                raise UsageError(f"data directory {path} mixes text and JSON files; give one kind")
            kind = kinds.pop()
            extra = {"sample_by": "document"} if kind == "text" else {}
            dataset = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train", **extra)
        elif source.startswith(("/", ".", "~")):
            raise UsageError(f"data file not found: {source}")
        else:
            name, _, config = source.partition(":")
            unreachable = hub.reach(f"dataset {name!r}")
            dataset = datasets.load_dataset(name, config or None, split=split)
    except UsageError:
        raise
    except Exception as exc:  # datasets raises many types for "not reachable" / "no such dataset"
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if unreachable is not None:
            reason = f"it is not in the local datasets cache, or the Hub is unreachable ({unreachable}): {reason}"
        raise UsageError(f"cannot load data {source!r}: {reason}") from exc
    if text_field not in dataset.column_names:
        raise UsageError(f"data {source!r} has no field {text_field!r}; its fields: {', '.join(dataset.column_names)}")
    return [text for text in dataset[text_field] if text]


def _cache_key(tokenizer: PreTrainedTokenizerBase, source: str, split: str, text_field: str) -> str:
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(tokenizer)).encode())
    path = Path(source).expanduser()
    if path.exists():
        for file in _local_files(path):
            stat = file.stat()
            digest.update(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    else:
        digest.update(source.encode())
    digest.update(f"|{split}|{text_field}".encode())
    return digest.hexdigest()[:24]


def token_stream(
    tokenizer: PreTrainedTokenizerBase, source: str, *, split: str = "train", text_field: str = "text"
) -> torch.Tensor:
    """All of ``source`` as one 1-D int64 token tensor, or the ``[a%:b%]`` part of it."""
    import torch
    from safetensors.torch import load_file, save_file

    base, start, end = parse_source(source)
    cache = files.cache_root() / "tokens" / f"{_cache_key(tokenizer, base, split, text_field)}.safetensors"
    if cache.is_file():
        stream = load_file(cache)["ids"]
    else:
        text = SEPARATOR.join(load_texts(base, split=split, text_field=text_field))
        stream = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.int64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with files.staged(cache) as staging:
            save_file({"ids": stream}, staging)
    return stream[int(start * len(stream)) : int(end * len(stream))]


def windows(stream: torch.Tensor, length: int, count: int | None = None, stride: int | None = None) -> torch.Tensor:
    """Consecutive ``[n, length]`` windows starting every ``stride`` tokens (default: no overlap)."""
    import torch

    stride = stride or length
    starts = range(0, len(stream) - length + 1, stride)
    if count is not None:
        starts = starts[:count]
    if len(starts) == 0:
        raise UsageError(f"the text has {len(stream)} tokens, fewer than one window of {length}")
    return torch.stack([stream[s : s + length] for s in starts])


def sample_windows(stream: torch.Tensor, length: int, count: int, seed: int) -> torch.Tensor:
    """``count`` windows of ``length`` tokens at seeded random offsets (calibration samples)."""
    import torch

    if len(stream) < length:
        raise UsageError(f"the text has {len(stream)} tokens, fewer than one sample of {length}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - length + 1, (count,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])
