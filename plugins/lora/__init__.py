"""``lora``: recover a sliced model's quality by LoRA fine-tuning with peft, then merge the adapters.

The recipe of SliceGPT and PruneNet (algorithms.md §4): adapters on every linear layer of the
decoder (:mod:`prunekit.plugins.training.adapters`), trained with transformers' ``Trainer`` on text
disjoint from the evaluation text (:mod:`~prunekit.plugins.training.corpus`,
:mod:`~prunekit.plugins.training.trainer`), early stopping on a held-out loss, and the best adapter
merged into the weights so the saved checkpoint is plain and stock. Settings and their CPU / CUDA
defaults are in :mod:`.options`.

An interrupted training resumes: checkpoints live under the run's ``checkpoints/lora/`` and a
rerun with the same ``--output`` and settings continues from the last complete one
(:mod:`~prunekit.plugins.training.checkpoints`); once the pipeline has kept the merged model, it removes them
(:mod:`prunekit.rundir`). The heavy libraries are imported when recovery runs, not when plugins load.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from prunekit import hookimpl
from prunekit.payloads import RecoverRequest, Recovery
from prunekit.plugins.lora.options import LoraOptions

NAME = "lora"


@hookimpl
def plugin_options() -> type[BaseModel]:
    return LoraOptions


@hookimpl
def recover(request: RecoverRequest) -> Recovery:
    from prunekit.models import fingerprint
    from prunekit.plugins.lora import options
    from prunekit.plugins.training import adapters, checkpoints, corpus, trainer

    start = time.perf_counter()
    chosen = LoraOptions.model_validate(request.options(NAME))
    model = request.model
    text, on_gpu = corpus.for_recovery(request, chosen, NAME)
    settings = options.resolve(chosen, on_gpu=on_gpu, length=text.sequence_length,
                               targets=request.architecture.lora_targets, source=text.source,
                               train_sequences=len(text.train), run_seed=request.config.seed)
    config = adapters.lora_config(model, settings.adapter)
    files = checkpoints.Store(request.work_dir, NAME, {"model": fingerprint(model), **settings.identity()},
                              adapter_dir=request.output_dir / "adapter")
    files.claim()

    finished = files.finished()
    if finished is not None:
        adapted = adapters.load(model, files.adapter_dir)
        report = {**finished, "resumed_from": "finished adapter"}
    else:
        adapted = adapters.attach(model, config, settings.seed)
        train_set, eval_set = text.datasets()
        outcome = trainer.train(adapted, settings, train_set, eval_set, files.trainer_dir,
                                resume_from=files.last_checkpoint(), title="LoRA recovery")
        trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
        report = {
            "method": "LoRA (peft), merged into the weights",
            "settings": settings.identity(),
            "data": text.report(outcome["tokens_seen"]),
            "trainable_parameters": trainable,
            **outcome,
            "adapter": str(files.adapter_dir) if chosen.save_adapter else None,
            "seconds": round(time.perf_counter() - start, 2),
        }
        files.finish(adapted, report, keep_adapter=chosen.save_adapter)
    return Recovery(adapters.merge(adapted), report)
