"""Text for calibration, recovery training and perplexity, read with ``datasets`` and tokenized once.

A *source* is a local file (``.txt``/``.raw``/``.md`` read as one document, ``.json``/``.jsonl``
with a text field), a directory of such files, or a Hub dataset ``name[:config]`` loaded the
ordinary way where a network exists. A source may end in a token-range selector ``[a%:b%]``
(as in ``datasets``' split slicing, applied to the token stream).

Two texts ship in the package, so that every default works with no network and no data folder,
and the text a model is trained or calibrated on is never the text it is measured on:

- :data:`TRAINING_TEXT`, an excerpt of 14 OpenStax college textbooks (CC BY 4.0): what
  calibration and recovery read by default (:func:`training_text`). Educational prose, sharing
  no 13-gram with WikiText-2's test file. A recovery that trained on the evaluation text would
  also learn its format (WikiText's `` @-@ `` and spaced punctuation), a gain that is adaptation,
  not recovery. The full corpus is ``../shared/data/openstax`` in the benchmark data folder, or
  any folder a user gives as ``source``.
- :data:`EVALUATION_TEXT`, WikiText-2's test split: what perplexity reads by default, its first
  half (:func:`evaluation_text`).

Documents are joined with a blank line and tokenized once per (tokenizer, source) into a token
stream cached as safetensors under ``$PRUNEKIT_CACHE/tokens``, together with the UTF-8 bytes and
the words each token ends (:func:`token_units`), so that perplexity can be stated per byte and
per word, units that do not depend on the tokenizer. :func:`windows` and :func:`sample_windows`
cut fixed-length samples from a stream.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunekit import files, hub
from prunekit.files import shared_data_dir
from prunekit.errors import UsageError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "EVALUATION_TEXT",
    "EVALUATION_HALF",
    "TRAINING_TEXT",
    "packaged",
    "evaluation_text",
    "training_text",
    "describe",
    "shared_ngrams",
    "token_units",
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
EVALUATION_TEXT = "wikitext2.test.raw"
"""WikiText-2's raw test split, byte-exact, shipped in ``prunekit/plugins/text`` with its CC BY-SA 3.0
attribution and licence: the default text of perplexity."""
EVALUATION_HALF = "[:50%]"
"""Perplexity reads the first half of :data:`EVALUATION_TEXT` (the half earlier releases measured on, so
that figures stay comparable); nothing trains on either half."""
TRAINING_TEXT = "openstax"
"""The folder of OpenStax excerpts shipped in ``prunekit/plugins/text`` with their CC BY 4.0 attribution
and licence (the first 128 KiB of each of the 14 books of the benchmark corpus): the default text of
calibration and recovery."""
OVERLAP_NGRAM = 13
"""Two texts are disjoint when they share no 13-gram of lower-cased alphanumeric words, the test the
benchmark corpus's README applies (and the contamination checks of GPT-3 and its successors)."""
DOCUMENTATION = ("README", "LICENSE", "LICENCE", "NOTICE", "COPYING")
"""Files of a folder source that describe the text rather than being it (the corpus's own README and
licence), by the start of their name."""


def packaged(name: str) -> Path:
    """A text shipped with prunekit. Packaged rather than fetched, so that the defaults need no network and
    no data folder, and a figure measured on one machine is measured on the same bytes on any other."""
    return Path(str(resources.files("prunekit.plugins") / "text" / name))


def evaluation_text() -> str:
    """The default evaluation source: the first half of the packaged WikiText-2 test split."""
    return f"{packaged(EVALUATION_TEXT)}{EVALUATION_HALF}"


def training_text() -> str:
    """The default calibration and training source: the packaged OpenStax excerpts."""
    return str(packaged(TRAINING_TEXT))


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
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir()
                   if p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES and not p.name.upper().startswith(DOCUMENTATION))
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


def _cache_key(tokenizer: PreTrainedTokenizerBase | None, source: str, split: str, text_field: str) -> str:
    digest = hashlib.sha256(b"ids, bytes, words")  # what a cached stream holds: an older cache (ids only) is not reused
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


def _units(text: str, ends: list[int]) -> tuple[list[int], list[int]]:
    """The UTF-8 bytes and the words each token accounts for, from the character offset where each token
    ends: a token accounts for the text since the previous token's end (whitespace goes to the token after
    it, and the last token takes the rest), so the counts of a stream add up to its text's bytes and words
    whatever the tokenization. A word is a run of non-whitespace characters, as lm-eval's wikitext task counts
    them (``re.split(r"\\s+")``)."""
    import numpy as np

    encoded = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    char_starts = np.append(np.flatnonzero((encoded & 0xC0) != 0x80), len(encoded))  # character -> byte offset
    ends = np.maximum.accumulate(np.asarray(ends, dtype=np.int64)) if ends else np.zeros(0, dtype=np.int64)
    if len(ends):
        ends[-1] = len(text)  # trailing whitespace no token covers goes to the last token
    word_starts = np.fromiter((m.start() for m in re.finditer(r"\S+", text)), dtype=np.int64)
    byte_ends = np.concatenate(([0], char_starts[ends]))
    words_before = np.concatenate(([0], np.searchsorted(word_starts, ends, side="left")))
    return np.diff(byte_ends).tolist(), np.diff(words_before).tolist()


def _tokenized(tokenizer: PreTrainedTokenizerBase, base: str, split: str, text_field: str) -> dict[str, torch.Tensor]:
    """``{"ids", "bytes", "words"}`` of the whole of ``base``, from the cache or tokenized now. A slow tokenizer
    gives no character offsets, hence no ``bytes`` or ``words``."""
    import torch
    from safetensors.torch import load_file, save_file

    cache = files.cache_root() / "tokens" / f"{_cache_key(tokenizer, base, split, text_field)}.safetensors"
    if cache.is_file():
        return load_file(cache)
    text = SEPARATOR.join(load_texts(base, split=split, text_field=text_field))
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        byte_counts, word_counts = _units(text, [end for _, end in encoded["offset_mapping"]])
        tensors = {"ids": torch.tensor(encoded["input_ids"], dtype=torch.int64),
                   "bytes": torch.tensor(byte_counts, dtype=torch.int64),
                   "words": torch.tensor(word_counts, dtype=torch.int64)}
    else:
        tensors = {"ids": torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.int64)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with files.staged(cache) as staging:
        save_file(tensors, staging)
    return tensors


def _part(tensor: torch.Tensor, start: float, end: float) -> torch.Tensor:
    return tensor[int(start * len(tensor)) : int(end * len(tensor))]


def token_stream(
    tokenizer: PreTrainedTokenizerBase, source: str, *, split: str = "train", text_field: str = "text"
) -> torch.Tensor:
    """All of ``source`` as one 1-D int64 token tensor, or the ``[a%:b%]`` part of it."""
    base, start, end = parse_source(source)
    return _part(_tokenized(tokenizer, base, split, text_field)["ids"], start, end)


def token_units(
    tokenizer: PreTrainedTokenizerBase, source: str, *, split: str = "train", text_field: str = "text"
) -> torch.Tensor | None:
    """``[n, 2]``: the UTF-8 bytes and the words of text each token of :func:`token_stream` accounts for (its
    rows line up with that stream's tokens); ``None`` for a slow tokenizer, which reports no offsets."""
    import torch

    base, start, end = parse_source(source)
    tensors = _tokenized(tokenizer, base, split, text_field)
    if "bytes" not in tensors:
        return None
    return _part(torch.stack([tensors["bytes"], tensors["words"]], dim=1), start, end)


def _ngrams(source: str, split: str, text_field: str) -> set[int]:
    words = re.findall(r"[a-z0-9]+", SEPARATOR.join(load_texts(source, split=split, text_field=text_field)).lower())
    return {hash(tuple(words[i : i + OVERLAP_NGRAM])) for i in range(len(words) - OVERLAP_NGRAM + 1)}


def shared_ngrams(source: str, reference: str, *, split: str = "train", text_field: str = "text") -> tuple[int, int]:
    """``(shared, total)``: how many of the distinct 13-grams of ``source`` (its ``split`` and ``text_field``) also
    occur in the local text ``reference``, both read whole (token ranges ignored, so two halves of one file count as
    overlapping). Cached by the files' state: a run states it on every report without reading the texts again."""
    import json

    base, reference_base = parse_source(source)[0], parse_source(reference)[0]
    keys = f"{_cache_key(None, base, split, text_field)}|{_cache_key(None, reference_base, 'train', 'text')}"
    cache = files.cache_root() / "overlap" / f"{hashlib.sha256(keys.encode()).hexdigest()[:24]}.json"
    if cache.is_file():
        return tuple(json.loads(cache.read_text()))
    grams = _ngrams(base, split, text_field)
    counted = (len(grams & _ngrams(reference_base, "train", "text")), len(grams))
    cache.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(cache, json.dumps(counted))
    return counted


def describe(source: str, tokens: int, *, split: str = "train", text_field: str = "text") -> dict[str, Any]:
    """What a calibration or training step read, as its report states it: the source, the tokens it used, and
    whether that text is disjoint from the default evaluation text (:func:`shared_ngrams`), measured rather
    than assumed, so that a user's own ``source`` is checked the same way as the packaged one."""
    shared, total = shared_ngrams(source, evaluation_text(), split=split, text_field=text_field)
    return {
        "source": source,
        "tokens": tokens,
        "evaluation_overlap": f"{shared:,} of its {total:,} distinct {OVERLAP_NGRAM}-grams occur in "
        f"{EVALUATION_TEXT} (the default evaluation text, read whole)",
        "disjoint_from_evaluation": shared == 0,
    }


def window_starts(tokens: int, length: int, count: int | None = None, stride: int | None = None) -> list[int]:
    """Where consecutive windows of ``length`` tokens start in a text of ``tokens`` tokens, every ``stride`` tokens
    (default: no overlap), the first ``count`` of them; a text shorter than one window is a usage error."""
    starts = list(range(0, tokens - length + 1, stride or length))[:count]
    if not starts:
        raise UsageError(f"the text has {tokens} tokens, fewer than one window of {length}")
    return starts


def windows(stream: torch.Tensor, length: int, count: int | None = None, stride: int | None = None) -> torch.Tensor:
    """The ``[n, length]`` windows :func:`window_starts` places. A stream with columns (``[N, k]``: ids beside
    :func:`token_units`) gives ``[n, length, k]``, rows cut alike."""
    import torch

    return torch.stack([stream[s : s + length] for s in window_starts(len(stream), length, count, stride)])


def sample_windows(stream: torch.Tensor, length: int, count: int, seed: int) -> torch.Tensor:
    """``count`` windows of ``length`` tokens at seeded random offsets (calibration samples); a stream with
    columns is cut as in :func:`windows`."""
    import torch

    if len(stream) < length:
        raise UsageError(f"the text has {len(stream)} tokens, fewer than one sample of {length}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - length + 1, (count,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])
