"""``Trainer`` with the distillation loss: the student learns the frozen teacher's distributions.

transformers' documented way to change what ``Trainer`` minimizes is to override
``compute_loss``; everything else (AdamW, schedule, checkpoints and resuming, early stopping, the
best checkpoint restored, accelerate's multi-GPU and FSDP launches) stays ``Trainer``'s. TRL's
``DistillationTrainer`` and ``GKDTrainer`` distil on-policy: they generate completions of prompts
(chat datasets with a ``prompt`` column), which plain-text recovery has neither the data for nor
the CPU time; offline forward KL on text windows is this one override.

The teacher is prepared by accelerate for evaluation only (on each process's device, no optimizer,
no gradient), or left where accelerate's ``device_map`` placed it (``teacher_offload``). During evaluation the KL and the text's cross-entropy are summed over the held-out
positions, reduced across processes, and logged beside ``eval_loss`` as ``eval_kl`` and
``eval_perplexity``, so the report has the held-out KL and perplexity curves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer

from prunekit.plugins.distill.loss import forward_kl, next_token_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from prunekit.plugins.distill.options import Settings


class DistillationTrainer(Trainer):
    """``Trainer`` minimizing ``KL(teacher ‖ student) + ce_weight × CE`` on the text's windows."""

    def __init__(self, *args: Any, teacher: PreTrainedModel, distillation: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        placed = getattr(teacher, "hf_device_map", None) is not None  # teacher_offload: accelerate's hooks move it
        self.teacher = self.accelerator.prepare_model(teacher.eval().requires_grad_(False), evaluation_mode=True,
                                                      device_placement=not placed)
        self.settings = distillation
        self.held_out = torch.zeros(4, dtype=torch.float64)  # KL sum, positions, CE sum, predicted tokens

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs["input_ids"]
        with torch.no_grad():
            target = self.teacher(input_ids=ids, use_cache=False).logits
        outputs = model(input_ids=ids, use_cache=False)
        kl = forward_kl(outputs.logits, target, temperature=self.settings.temperature, top_k=self.settings.top_k)
        loss = kl.mean()
        measuring = not model.training
        if self.settings.ce_weight or measuring:
            cross_entropy = next_token_loss(outputs.logits, ids)
            if self.settings.ce_weight:
                loss = loss + self.settings.ce_weight * cross_entropy.mean()
            if measuring:
                self.held_out += torch.tensor([kl.sum().item(), kl.numel(), cross_entropy.sum().item(),
                                               cross_entropy.numel()], dtype=torch.float64)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the held-out KL and perplexity to the evaluation's log line."""
        if "eval_loss" in logs and self.held_out[1] > 0:
            kl, positions, cross_entropy, tokens = self.accelerator.reduce(
                self.held_out.to(self.accelerator.device), reduction="sum").tolist()
            logs = {**logs, "eval_kl": kl / positions, "eval_perplexity": math.exp(cross_entropy / tokens)}
            self.held_out.zero_()
        super().log(logs, *args, **kwargs)
