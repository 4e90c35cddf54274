"""A ``--stream`` run: load (a skeleton), score, slice and save, holding one decoder layer at a time.

Every step is the in-memory run's own, on other storage: the pruner's ``score_importance`` walks the layers through
:class:`~prunekit.plugins.streaming.layers.StreamedArchitecture`; the keep plan is the core's ``keep_plan``; each layer
is sliced by the run's ``slice_layer`` chain, cast to the checkpoint's dtype as the in-memory run saves it, and written
into its shard; the shapes, config and shard plan come from slicing a ``meta`` copy of the skeleton the same way first.
So the checkpoint is, tensor for tensor, the one the same run in memory saves (tests/test_streaming.py).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prunekit import files, manager
from prunekit.errors import UsageError
from prunekit.models import first_non_finite, local_path, resolve_device, resolve_dtype
from prunekit.payloads import Dimension, ScoreRequest, SliceRequest, StreamedRun
from prunekit.pipeline import count_parameters, parameter_parts, params_report
from prunekit.plugins.streaming import layers as streamed
from prunekit.plugins.streaming.checkpoint import Checkpoint, ShardWriter
from prunekit.slicing import keep_plan, kept_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.payloads import StreamRequest


def return_freed_memory() -> None:
    """Have glibc give every block of 1 MB or more back to the system when it is freed, so that a layer's memory is gone
    before the next layer's arrives. By default glibc raises its threshold for serving blocks from the heap to the
    size of each large block freed, and a freed layer then stays in the heap beside the next one (measured: PruneNet's
    streamed SmolLM2 run holds 76 MB more through its slice stage). No effect elsewhere than glibc."""
    import ctypes
    import ctypes.util

    M_MMAP_THRESHOLD = -3
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_MMAP_THRESHOLD, 2**20)
    except (OSError, AttributeError):
        pass


def checkpoint_dir(name: str) -> Path:
    """The checkpoint directory ``--model name`` loads from: a plugin's model (made on first use), a local directory,
    or a Hub id's snapshot in the local cache."""
    from huggingface_hub import snapshot_download

    source = manager.get_plugins().model_source(name)
    if source is not None:
        if source.checkpoint is None:
            raise UsageError(f"--stream reads a checkpoint from disk, and {name} is built in memory; "
                             "save it (save_pretrained) and name the directory")
        return source.checkpoint()
    if (path := local_path(name)) is not None:
        return path
    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as exc:  # noqa: BLE001 - offline, unknown id: the reason is the message
        raise UsageError(f"cannot load model {name!r} for --stream: {' '.join(str(exc).split())}") from exc


def compress(request: StreamRequest) -> StreamedRun:
    """The ``compress_streaming`` hook of the built-in ``stream``."""
    from transformers import AutoConfig, GenerationConfig

    config, hooks = request.config, request.hooks
    # What does not grow with the model comes before the load stage, whose memory the report compares with the
    # model's size: making a built-in model's checkpoint (once), the config, the family's code (transformers imports
    # a model's module when first asked for it: 130 MB for Gemma 3) and the tokenizer (290 MB for Gemma 3's 262k
    # tokens, and an unchanged copy for the output). docs/streaming.md reports these as the fixed overhead.
    return_freed_memory()
    directory = checkpoint_dir(config.model)
    model_config = AutoConfig.from_pretrained(directory)
    streamed.import_family(model_config)
    tokenizer = load_tokenizer(directory)
    with request.stage("load"):
        checkpoint = Checkpoint(directory)
        stored = getattr(model_config, "dtype", None)
        storage = stored if isinstance(stored, torch.dtype) else torch.float32  # what a run in memory saves in
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        model = streamed.skeleton(model_config, dtype)
        small = streamed.stand_in(model.config)
        adapter = hooks.architecture_for(small)  # a registered adapter, else the one derived from the stand-in
        streamed.computed_buffers(model, small, adapter, device)
        del small
        layers = streamed.StreamedLayers(model, adapter.layers(model), checkpoint, dtype, device)
        architecture = streamed.StreamedArchitecture(adapter, layers)
        model.prunekit_fingerprint = streamed.fingerprint(model, checkpoint, dtype)
        generation = GenerationConfig.from_pretrained(directory) if (directory / "generation_config.json").is_file() \
            else model.generation_config
    params_before = count_parameters(model)
    layers_before, units_before = parameter_parts(model, adapter)

    with request.stage("score") if config.compresses else nullcontext():
        # a calibration pruner runs the model up to the first layer: what lies outside the layers loads then
        running = model.register_forward_pre_hook(layers.before_forward, with_kwargs=True)
        try:
            importances = hooks.score_importance(ScoreRequest(model, architecture, config, tokenizer=tokenizer)) \
                if config.compresses else []
        finally:
            running.remove()
        layers.release()
        layers.release_outside()
    if config.compresses and not importances:
        raise RuntimeError(f"the selected pruners returned no importance for {config.model}")
    pruning: dict[str, object] = {}
    for importance in importances:
        adapter.require(importance.dimension)
        pruning[importance.dimension.value] = importance.report
    if kept_layers(importances, config.ratio_for(Dimension.LAYERS), len(layers)) is not None:
        raise UsageError("--stream slices layers in place and cannot drop whole layers; run without --stream")

    with files.staged(request.target) as staging:
        staging.mkdir()
        with request.stage("slice"):
            plan = keep_plan(importances, config.ratio, adapter, model, ratios=config.ratios)
            sliced = copy.deepcopy(model)  # on meta: the shapes the layers will have, sliced as they will be
            for index, keep in enumerate(plan):
                hooks.slice_layer(SliceRequest(sliced, adapter, index, keep))
            stock = adapter.sync_config(sliced)
            planned = _planned(sliced, storage)
            writer = ShardWriter(staging, planned, count_parameters(sliced))
            for index, keep in enumerate(plan):
                hooks.slice_layer(SliceRequest(model, architecture, index, keep))
                layer = layers[index]
                if (tensor := first_non_finite(layer)) is not None:
                    raise RuntimeError(f"slice left non-finite values (NaN or Inf) in layer {index}'s {tensor}; "
                                       "nothing was saved")
                for name, value in layer.state_dict().items():
                    if (full := f"{layers.prefix}.{index}.{name}") in planned:
                        writer.write(full, value.to(storage) if value.is_floating_point() else value)
                layers.release()
        with request.stage("save"):
            prefix = f"{layers.prefix}."
            for name, tensor in planned.items():
                if not name.startswith(prefix):  # embeddings, head, norms: unchanged, a chunk at a time
                    _copy(name, model, checkpoint, writer, dtype, storage)
            writer.finish()
            sliced.config.dtype = str(storage).removeprefix("torch.")  # as save_pretrained records it
            sliced.config.architectures = [type(sliced).__name__]
            sliced.config.save_pretrained(staging)
            if sliced.can_generate():
                generation.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
    params = params_report(params_before, layers_before, units_before, sliced, adapter)
    return StreamedRun(params=params, pruning=pruning, stock=stock, source=directory)


def _copy(name: str, model: PreTrainedModel, checkpoint: Checkpoint, writer: ShardWriter, dtype: torch.dtype,
          storage: torch.dtype) -> None:
    """Tensor ``name`` from the checkpoint into the new one, a row range at a time, cast as a run in memory casts it
    (to the run's dtype on loading, to the checkpoint's on saving)."""
    row = 0
    for chunk in checkpoint.chunks(streamed.source_name(model, name, checkpoint)):
        if chunk.is_floating_point():
            chunk = chunk.to(dtype).to(storage)
            if not torch.isfinite(chunk).all():
                raise UsageError(f"{name} holds non-finite values (NaN or Inf) in {checkpoint.directory}; "
                                 "a pruned model would be meaningless")
        writer.write(name, chunk, row)
        row += chunk.shape[0] if chunk.dim() else 1


def _planned(model: PreTrainedModel, storage: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors ``save_pretrained`` writes of ``model`` (tied copies left out, as transformers leaves them), in
    its order, on ``meta``, floating ones in ``storage``."""
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = remove_tied_weights_from_state_dict(model.state_dict(), model)
    return {name: torch.empty(tensor.shape, dtype=storage if tensor.is_floating_point() else tensor.dtype,
                              device="meta") for name, tensor in state.items()}


def load_tokenizer(directory: Path):
    """The checkpoint's tokenizer, as a run in memory loads it (none for a bare checkpoint)."""
    from prunekit.models import TOKENIZER_FILES

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError):
        return None
