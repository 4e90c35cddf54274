"""Turning ``--model`` into a model and tokenizer: a name a plugin provides (``model_source``), a local directory
(stock ``from_pretrained``, or :func:`prunekit.load` where prunekit wrote per-layer sizes), a Hub id.

Bad checkpoints are usage errors naming the problem before any work starts: no ``config.json``, a missing, truncated
or corrupt weights file (:func:`prunekit.loading.weight_files`), NaN or Inf in any tensor (:func:`first_non_finite`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prunekit import manager
from prunekit.errors import UsageError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    storage_dtype: torch.dtype
    """The dtype the checkpoint was stored in (or a model built in memory, built in): a compressed model is saved in
    it, so never larger on disk than its source, whatever wider dtype it was computed in (float32 on CPU)."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU (exact, and fast there) and bfloat16 on CUDA."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def local_path(name: str) -> Path | None:
    """``name`` as a local directory, ``None`` for a Hub id; a path that does not exist is bad input."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"model path is not a directory: {name}")
        return path
    if name.startswith(("/", ".", "~")) or not HUB_ID.match(name):
        raise UsageError(f"model path does not exist: {name}")
    return None


def load_model(name: str, dtype: str = "auto", device: str = "auto") -> LoadedModel:
    """The model and tokenizer that ``--model name`` means, in eval mode on the chosen device."""
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    source = manager.get_plugins().model_source(name)
    if source is not None and source.build is not None:
        model = source.build(0)
        loaded = LoadedModel(model, source.tokenizer() if source.tokenizer else None, model.dtype)
    else:
        loaded = _from_pretrained(source.checkpoint() if source else (local_path(name) or name), torch_dtype)
    loaded.model = loaded.model.to(device=target, dtype=torch_dtype).eval()
    # after the cast: a finite weight too large for float16 is Inf in the model the run computes with
    if (tensor := first_non_finite(loaded.model)) is not None:
        raise UsageError(f"{tensor} holds non-finite values (NaN or Inf) in {name}; "
                         "a pruned or evaluated model would be meaningless")
    return loaded


def first_non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN, Inf or -Inf; ``None`` when every tensor is finite.

    One pass over the floating-point tensors (no family's float buffer legitimately holds either), about 0.05 s for
    135M parameters on CPU: a sum is finite only if every element is (NaN and Inf survive any order of addition), so
    only a tensor whose sum is not is checked element by element. Tied weights are checked once, by their first name."""
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.device.type == "meta":
                continue
            if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
                return name
    return None


def _from_pretrained(source: str | Path, dtype: torch.dtype) -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from prunekit import hub, loading

    unreachable = hub.reach(f"model {source!r}") if isinstance(source, str) else None
    if isinstance(source, Path):
        loading.check_checkpoint(source)  # no config.json, missing or unreadable weights: named
    try:
        config = AutoConfig.from_pretrained(source)
        stored = getattr(config, "dtype", None)  # loading rewrites it
        if isinstance(source, Path) and loading.needs_prunekit(source):
            model = loading.load(source, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        if unreachable is not None and _cached_snapshot(str(source)) is None:
            reason = f"it is not in the local Hugging Face cache, and the Hub is unreachable ({unreachable})"
        if "Unrecognized configuration class" in reason:  # transformers lists every class it maps (3 KB)
            reason = (f"{getattr(config, 'model_type', '?')!r} is not a decoder model that "
                      "AutoModelForCausalLM builds (an encoder-decoder or encoder family?)")
        raise UsageError(f"cannot load model {str(source)!r}: {reason}") from exc
    except SafetensorError as exc:  # a Hub id's cached files (a local directory's were checked)
        if (snapshot := _cached_snapshot(str(source))) is not None:
            loading.weight_files(snapshot)  # names the bad file
        reason = loading.error_reason(exc)
        raise UsageError(f"cannot load model {str(source)!r}: unreadable weights ({reason})") from exc
    tokenizer = None  # a bare checkpoint still slices; evaluators that need text say so
    # transformers 5 builds an empty one-token tokenizer for a directory without tokenizer files
    if not isinstance(source, Path) or any((source / name).is_file() for name in TOKENIZER_FILES):
        with contextlib.suppress(OSError, ValueError):
            tokenizer = AutoTokenizer.from_pretrained(source)
    return LoadedModel(model, tokenizer, stored if isinstance(stored, torch.dtype) else torch.float32)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The directory of the local Hugging Face cache that holds Hub model ``repo_id``'s files."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    return Path(config).parent if isinstance(config, str) else None


def fingerprint(model: PreTrainedModel, tensors: Iterable[tuple[str, Iterable[torch.Tensor]]] | None = None) -> str:
    """A short hash of the config and every weight: the identity caches (baselines, policies) key on.

    Hashing the weights, not a name or path, means a fine-tuned or re-saved model never picks up another model's cache
    entry; it reads each tensor once (about a second for 135M). A model whose weights are not in memory (a streamed
    run's) carries, as ``prunekit_fingerprint``, a function that passes ``tensors``: each ``state_dict()`` entry's name
    and its data in consecutive pieces, read from its checkpoint."""
    if tensors is None and (known := getattr(model, "prunekit_fingerprint", None)) is not None:
        return known()
    digest = hashlib.sha256(json.dumps(model.config.to_diff_dict(), sort_keys=True, default=str).encode())
    for name, pieces in tensors or ((name, [tensor]) for name, tensor in model.state_dict().items()):
        digest.update(name.encode())
        for piece in pieces:
            digest.update(piece.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]
