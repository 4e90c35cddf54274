"""Training a recovery with transformers' ``Trainer``, and the loss curves it leaves behind.

``Trainer`` already does everything recovery needs and is the code people trust for it: AdamW,
the linear schedule with warm-up, periodic evaluation on the held-out sequences, checkpoints with
optimizer and RNG state, resuming from one, early stopping (``EarlyStoppingCallback``), loading
the best checkpoint at the end, and accelerate's multi-GPU and FSDP launches. This module only
configures it, replaces its printed logs with a progress bar on stderr (stdout belongs to
``--json``), and reads the curves from its log history. ``lora`` trains with ``Trainer`` itself,
``distill`` with a subclass whose loss is the divergence from the teacher.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from prunekit.progress import bars_hidden

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel


class TrainingSettings(Protocol):
    """The settings of a training that ``Trainer``'s arguments are made from (``lora``'s and ``distill``'s)."""

    learning_rate: float
    steps: int
    batch_size: int
    warmup: float
    eval_every: int
    patience: int | None
    seed: int


class LossProgress(TrainerCallback):
    """A rich progress bar over optimizer steps showing the latest train and eval loss."""

    def __init__(self, progress: Progress, title: str) -> None:
        self.progress = progress
        self.title = title
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):  # Trainer's callback signature
        self.task = self.progress.add_task(
            self.title, total=state.max_steps, completed=state.global_step, loss="", eval_loss=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.task is None or not logs:
            return
        if "loss" in logs:
            self.progress.update(self.task, loss=f"loss {logs['loss']:.3f}")
        if "eval_loss" in logs:
            self.progress.update(self.task, eval_loss=f"eval {logs['eval_loss']:.3f}")


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """The bar on stderr, hidden like every prunekit bar when stderr is no terminal or in quiet mode;
    removed again however training ends (Ctrl-C included)."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[eval_loss]}"), TimeRemainingColumn(),
        console=console, transient=True, disable=bars_hidden(console),
    )
    with progress:
        yield progress


def arguments(settings: TrainingSettings, output_dir: Path, *, on_cpu: bool, evaluate_first: bool) -> TrainingArguments:
    """Evaluation and checkpoints share one interval: the best checkpoint can then be restored,
    and early stopping acts at every evaluation."""
    every = settings.eval_every
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=settings.warmup,  # a float below 1 is a fraction of max_steps
        optim="adamw_torch",
        weight_decay=0.0,
        eval_strategy="steps",
        eval_steps=every,
        eval_on_start=evaluate_first,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=1,  # plus the best, which Trainer always keeps
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        restore_callback_states_from_checkpoint=True,  # early stopping's patience counter
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        include_num_input_tokens_seen=True,  # the report states the tokens trained on, which early stopping cuts
        disable_tqdm=True,
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=on_cpu,
        label_names=["labels"],
        prediction_loss_only=True,  # eval needs the loss, not [batch, length, vocab] logits
        remove_unused_columns=False,
    )


def train(model: PreTrainedModel, settings: TrainingSettings, train_set: Dataset, eval_set: Dataset, output_dir: Path,
          resume_from: Path | None, *, title: str, trainer_class: type[Trainer] = Trainer,
          curves: tuple[str, ...] = (), held_out_perplexity: str | None = None,
          **trainer_options: Any) -> dict[str, Any]:
    """Train ``model`` (its trainable parameters) in place, ending with the best checkpoint's weights, and return what
    happened. ``trainer_class`` and ``trainer_options`` make the ``Trainer`` (a subclass takes its own options);
    ``title`` names the progress bar; ``curves`` and ``held_out_perplexity`` are as in :func:`summary`."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    args = arguments(settings, output_dir, on_cpu=on_cpu, evaluate_first=resume_from is None)
    callbacks: list[TrainerCallback] = []
    if settings.patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.patience))
    use_cache = model.config.use_cache  # Trainer switches the KV cache off for training
    with progress_bar() as progress:
        trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                                callbacks=[*callbacks, LossProgress(progress, title)], **trainer_options)
        trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        finally:
            model.config.use_cache = use_cache
    return summary(trainer, settings, resume_from, curves, held_out_perplexity)


def summary(trainer: Trainer, settings: TrainingSettings, resume_from: Path | None, curves: tuple[str, ...] = (),
            held_out_perplexity: str | None = None) -> dict[str, Any]:
    """The loss curves and the outcome, from ``Trainer``'s log history (restored on resume, so
    the curves of a resumed run are whole), with a curve of each further logged metric ``curves`` names. The held-out
    perplexity is exp of the eval loss where that loss is the text's cross-entropy; otherwise the logged metric
    ``held_out_perplexity`` names, at the first evaluation and the best step."""
    state = trainer.state
    history = state.log_history
    train_curve = [{"step": e["step"], "loss": round(e["loss"], 5)} for e in history if "loss" in e]
    eval_curve = [{"step": e["step"], "loss": round(e["eval_loss"], 5)} for e in history if "eval_loss" in e]
    start = eval_curve[0]["loss"] if eval_curve and eval_curve[0]["step"] == 0 else None
    if held_out_perplexity is None:
        perplexity = {  # exp of the mean token loss on the held-out sequences
            "without_recovery": None if start is None else round(math.exp(start), 3),
            "with_recovery": None if state.best_metric is None else round(math.exp(state.best_metric), 3),
        }
    else:
        logged = {e["step"]: e[held_out_perplexity] for e in history if held_out_perplexity in e}
        perplexity = {"without_recovery": logged.get(0), "with_recovery": logged.get(state.best_global_step)}
        perplexity = {key: None if value is None else round(value, 3) for key, value in perplexity.items()}
    more = {name: [{"step": e["step"], name.removeprefix("eval_"): round(e[name], 5)} for e in history if name in e]
            for name in curves}
    return {
        "steps": state.global_step,
        "max_steps": settings.steps,
        "tokens_seen": int(state.num_input_tokens_seen),
        "stopped_early": state.global_step < settings.steps,
        "best_step": state.best_global_step,
        "eval_loss_start": start,
        "eval_loss_best": state.best_metric,
        "held_out_perplexity": perplexity,
        "resumed_from": resume_from.name if resume_from else None,
        "train_loss": train_curve,
        "eval_loss": eval_curve,
        **more,
    }
