"""A safetensors checkpoint read a row range at a time, and one written a tensor at a time, neither ever whole.

Both follow the format (an 8-byte little-endian header length, a JSON header with each tensor's dtype, shape and byte
range, then the data) rather than the safetensors library, for two reasons measured here. Reading: ``safe_open`` maps
the whole file into the process, private and writable, which a process whose memory is capped (``ulimit -v``/``-d``,
``setrlimit``) cannot do for a file larger than the cap, though it would read a sliver of it; :class:`Checkpoint`
reads each row range with a plain read into a fresh tensor. Writing: safetensors serializes a dict of whole tensors,
and one shard of a 7B model is gigabytes, so :class:`ShardWriter` writes each tensor at its place as the run produces
it. The shards, their names and the index are those ``save_pretrained`` writes for the same tensors: huggingface_hub's
``split_torch_state_dict_into_shards`` plans them, as it does for transformers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from prunekit import loading
from prunekit.errors import UsageError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
CHUNK_BYTES = 4 * 2**20
"""Rows read or converted at once, in bytes: a tensor larger than this (an embedding) never lies whole in memory.
A cast to float32 doubles a 16-bit chunk, and a consumer holds one chunk while the next is read: 4 MB chunks keep that
near 24 MB, and read no slower than larger ones from the page cache."""
MAX_SHARD_SIZE = "50GB"
"""``save_pretrained``'s default shard size (transformers 5)."""


@dataclass(frozen=True)
class Entry:
    file: Path
    offset: int
    """Where the tensor's data starts in the file."""
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * torch.Size(self.shape[1:]).numel()


class Checkpoint:
    """The tensors of a checkpoint directory (``model.safetensors`` or the shards its index names), by name, read
    from disk when asked and never kept. Each file's header is checked as safetensors checks it (known dtypes, byte
    ranges that match the shapes and tile the data to the file's end), so a truncated or corrupt file is a usage
    error naming it before anything runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        files = loading.weight_files(directory, check=False)
        if not files:
            raise UsageError(f"--stream reads safetensors weights, and {directory} has no {loading.WEIGHTS} "
                             f"or {loading.INDEX}")
        self.entries: dict[str, Entry] = {}
        for file in files:
            try:
                self.entries.update(_entries(file))
            except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
                raise loading.unreadable(file, exc) from exc

    def read(self, name: str, rows: slice = slice(None)) -> torch.Tensor:
        """Tensor ``name`` (only ``rows`` of its first dimension, when given), as stored."""
        entry = self.entries[name]
        if not entry.shape:
            start, stop, shape = 0, 1, ()
        else:
            start, stop, _ = rows.indices(entry.shape[0])
            stop = max(start, stop)
            shape = (stop - start, *entry.shape[1:])
        data = torch.empty(torch.Size(shape).numel() * entry.dtype.itemsize, dtype=torch.uint8)
        with entry.file.open("rb", buffering=0) as handle:
            handle.seek(entry.offset + start * (entry.row_bytes if entry.shape else 0))
            if handle.readinto(data.numpy()) != data.numel():
                raise loading.unreadable(entry.file, ValueError(f"{name} ends early"))
        return data.view(entry.dtype).reshape(shape)

    def chunks(self, name: str, dtype: torch.dtype | None = None) -> Iterator[torch.Tensor]:
        """Tensor ``name`` as consecutive row ranges of at most :data:`CHUNK_BYTES` (one, for a small tensor), each
        cast to ``dtype`` where given: what an elementwise pass (a copy, a cast, a hash) needs, a chunk at a time."""
        entry = self.entries[name]
        if len(entry.shape) == 0:
            tensor = self.read(name)
            yield tensor if dtype is None else tensor.to(dtype)
            return
        step = max(1, CHUNK_BYTES // max(1, entry.row_bytes))
        for start in range(0, entry.shape[0], step):
            yield self.read(name, slice(start, start + step)) if dtype is None else \
                self.read(name, slice(start, start + step)).to(dtype)


def _entries(file: Path) -> dict[str, Entry]:
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    start, size = 8 + length, file.stat().st_size
    entries, ranges = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entry = Entry(file, start + info["data_offsets"][0], DTYPES[info["dtype"]], tuple(info["shape"]))
        begin, end = info["data_offsets"]
        if end - begin != torch.Size(entry.shape).numel() * entry.dtype.itemsize:
            raise ValueError(f"{name}'s byte range does not match its shape")
        entries[name] = entry
        ranges.append((begin, end))
    covered = 0
    for begin, end in sorted(ranges):
        if begin != covered:
            raise ValueError("the tensors' byte ranges do not tile the data")
        covered = end
    if start + covered != size:
        raise ValueError(f"the header describes {start + covered} bytes, the file has {size}")
    return entries


@dataclass
class _Place:
    file: Path
    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int
    written: int = 0


class ShardWriter:
    """The weight files ``save_pretrained`` would write for ``planned`` (name → a tensor of the final shape and dtype,
    on the meta device), filled in one tensor, or row range, at a time.

    The files are created at their final size up front, so every tensor has its place before any is produced;
    :meth:`finish` checks that each byte was written and writes the index, in ``save_pretrained``'s words."""

    def __init__(self, directory: Path, planned: dict[str, torch.Tensor], total_parameters: int,
                 max_shard_size: str = MAX_SHARD_SIZE) -> None:
        from huggingface_hub import split_torch_state_dict_into_shards

        self.directory = directory
        self.split = split_torch_state_dict_into_shards(planned, filename_pattern="model{suffix}.safetensors",
                                                        max_shard_size=max_shard_size)
        self.total_parameters = total_parameters
        self.places: dict[str, _Place] = {}
        for filename, names in self.split.filename_to_tensors.items():
            self._lay_out(directory / filename, {name: planned[name] for name in names})

    def _lay_out(self, file: Path, tensors: dict[str, torch.Tensor]) -> None:
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        start = 0
        for name, tensor in tensors.items():
            nbytes = tensor.numel() * tensor.element_size()
            header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape),
                            "data_offsets": [start, start + nbytes]}
            self.places[name] = _Place(file, start, tensor.dtype, tuple(tensor.shape), nbytes)
            start += nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        data_start = 8 + len(encoded)
        for name in tensors:
            self.places[name].offset += data_start
        with file.open("wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)) + encoded)
            handle.truncate(data_start + start)

    def write(self, name: str, tensor: torch.Tensor, row: int = 0) -> None:
        """Tensor ``name``'s data, or (``row`` > 0, or fewer rows) the rows from ``row`` on, in its planned dtype."""
        place = self.places[name]
        if tensor.dtype != place.dtype or tuple(tensor.shape[1:]) != place.shape[1:]:
            raise RuntimeError(f"{name}: got {tensor.dtype} {tuple(tensor.shape)} for the planned "
                               f"{place.dtype} {place.shape}")
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        row_bytes = place.nbytes // place.shape[0] if place.shape and place.shape[0] else 0
        if row * row_bytes + data.nbytes > place.nbytes:
            raise RuntimeError(f"{name}: rows {row}+ of {tuple(tensor.shape)} overrun its planned {place.shape}")
        with place.file.open("r+b") as handle:
            handle.seek(place.offset + row * row_bytes)
            handle.write(data.data)
        place.written += data.nbytes

    def finish(self) -> None:
        """Check that every planned byte was written, then write the index of a sharded checkpoint."""
        short = [name for name, place in self.places.items() if place.written != place.nbytes]
        if short:
            raise RuntimeError(f"the streamed checkpoint lacks data for {len(short)} tensors, e.g. {short[0]}")
        if self.split.is_sharded:
            index = {"metadata": {"total_parameters": self.total_parameters, **self.split.metadata},
                     "weight_map": self.split.tensor_to_filename}
            (self.directory / loading.INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
