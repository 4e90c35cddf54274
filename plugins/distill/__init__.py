"""``distill``: recover a compressed model by knowledge distillation from the model it came from.

The recovery of the field's best structured-pruning results (Minitron, Model-Optimizer, Llama 3.2
1B; algorithms.md): the uncompressed model, reloaded from the run's ``--model`` as it was loaded
and frozen, is the teacher; the compressed model learns its next-token distributions by forward
KL (:mod:`.loss`) on text disjoint from the evaluation text (the OpenStax excerpt by default,
:mod:`prunekit.plugins.training.corpus`), every parameter trained, with transformers' ``Trainer``
(:mod:`.trainer`). The target is the uncompressed model itself, not the text, so unlike ``lora``
it adapts the model to no text's style, and "after / dense" needs no control.

With ``lora=true`` it trains LoRA adapters instead and merges them, as ``lora`` does. An
interrupted training resumes from the run's ``checkpoints/distill/`` like ``lora``'s
(:mod:`prunekit.plugins.training.checkpoints`). Settings are in :mod:`.options`; after ``refit``
when both are named (``--plugins activation,refit,distill``).

The teacher's memory: it is a second copy of the uncompressed model on the student's device (on
a CPU both fit); ``teacher_offload`` places it with accelerate instead, the rest of it on disk
(``core eval --offload``'s placement). docs/recovery.md has the measurements.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from prunekit import hookimpl
from prunekit.payloads import RecoverRequest, Recovery
from prunekit.plugins.distill.options import DistillOptions

NAME = "distill"


@hookimpl
def plugin_options() -> type[BaseModel]:
    return DistillOptions


@hookimpl
def recover(request: RecoverRequest) -> Recovery:
    from prunekit.models import fingerprint, load_model
    from prunekit.plugins.commands.evaluate import offloaded
    from prunekit.plugins.distill import options
    from prunekit.plugins.distill.trainer import DistillationTrainer
    from prunekit.plugins.lora.options import LoraOptions
    from prunekit.plugins.training import adapters, checkpoints, corpus, trainer

    start = time.perf_counter()
    chosen = DistillOptions.model_validate(request.options(NAME))
    model = request.model
    text, on_gpu = corpus.for_recovery(request, chosen, NAME)
    settings = options.resolve(chosen, on_gpu=on_gpu, length=text.sequence_length, source=text.source,
                               train_sequences=len(text.train), vocabulary=model.config.vocab_size,
                               run_seed=request.config.seed)
    files = checkpoints.Store(request.work_dir, NAME, {"model": fingerprint(model), "teacher": request.config.model,
                                                       **settings.identity()})
    files.claim()

    if chosen.teacher_offload is None:
        teacher = load_model(request.config.model, dtype=request.config.dtype, device=request.config.device).model
    else:
        teacher = offloaded(request.config, Path(chosen.teacher_offload), chosen.teacher_memory).model
    if settings.lora:
        shape = LoraOptions()  # lora's default adapter on the architecture's linear layers
        config = adapters.lora_config(model, adapters.Adapter(shape.rank, shape.alpha, shape.dropout,
                                                              request.architecture.lora_targets))
        student = adapters.attach(model, config, settings.seed)
    else:
        student = model.requires_grad_(True)
    train_set, eval_set = text.datasets()
    outcome = trainer.train(student, settings, train_set, eval_set, files.trainer_dir,
                            resume_from=files.last_checkpoint(), title="Distillation",
                            trainer_class=DistillationTrainer, curves=("eval_kl", "eval_perplexity"),
                            held_out_perplexity="eval_perplexity", teacher=teacher, distillation=settings)
    del teacher
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    report = {
        "method": "knowledge distillation: forward KL from the uncompressed model's next-token distributions"
                  + (", LoRA adapters merged into the weights" if settings.lora else ", every parameter trained"),
        "teacher": request.config.model,
        "settings": settings.identity(),
        "data": text.report(outcome["tokens_seen"]),
        "trainable_parameters": trainable,
        **outcome,
        "seconds": round(time.perf_counter() - start, 2),
    }
    recovered = adapters.merge(student) if settings.lora else student.requires_grad_(False).eval()
    return Recovery(recovered, report)
