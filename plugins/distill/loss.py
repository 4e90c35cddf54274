"""The distillation loss: forward KL from the teacher's next-token distribution to the student's.

``KL(p_teacher ‖ p_student) = Σ_v p_t(v) (log p_t(v) − log p_s(v))`` at every position of every
sequence, both distributions softened by the temperature ``T`` and the KL scaled by ``T²`` so its
gradient keeps the same size whatever ``T`` (Hinton et al., 2015), then averaged over positions:
Model-Optimizer's ``LogitsDistillationLoss`` and Minitron's recipe. Forward KL is mode-covering:
the student is pushed to put mass wherever the teacher does, which is what keeps its perplexity
on any text close to the teacher's.

With ``top_k`` the target is the teacher's k most likely tokens, renormalized, and the student's
full-vocabulary log-probabilities at those tokens: cheaper to store, but biased, since the
teacher's tail is set to zero and the renormalized head is sharper than the teacher ("Sparse
Logit Sampling", Anshumann et al., ACL 2025). It is an option, not the default.

Its gradient with respect to the student's logits is ``q − p`` (softened), computed as that
difference (:class:`ForwardKL`) rather than by autograd through ``log_softmax``: the two are the
same function, but autograd's leaves a rounding residue where the student equals the teacher, and
Adam, which divides by the gradient's own scale, turns any residue into updates of the learning
rate's size. A model distilled into a copy of itself must stay as it is.
"""

from __future__ import annotations

import torch


class ForwardKL(torch.autograd.Function):
    """``KL(p ‖ softmax(student))`` per position from the target's log-probabilities ``log_target`` (over the
    vocabulary, or over the tokens ``index`` names), with the gradient ``softmax(student) · Σp − p`` (``p`` scattered
    to its tokens), which is exactly zero where the student's distribution equals a full-vocabulary target."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, log_target: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        log_q = torch.log_softmax(student, dim=-1)
        target = log_target.exp()
        ctx.save_for_backward(log_q, target, index)
        picked = log_q if index is None else log_q.gather(-1, index)
        return (target * (log_target - picked)).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        log_q, target, index = ctx.saved_tensors
        q = log_q.exp()
        if index is None:
            difference = q - target
        else:
            difference = q * target.sum(-1, keepdim=True) - torch.zeros_like(q).scatter_(-1, index, target)
        return grad.unsqueeze(-1) * difference, None, None


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
               top_k: int | None = None) -> torch.Tensor:
    """KL(teacher ‖ student) at each position (``[..., vocab]`` logits in, ``[...]`` out), times ``temperature²``;
    with ``top_k``, over the teacher's k largest logits only (see the module doc)."""
    teacher = teacher_logits.detach().float() / temperature
    index = None
    if top_k is not None:
        teacher, index = teacher.topk(top_k, dim=-1)
    divergence = ForwardKL.apply(student_logits.float() / temperature, torch.log_softmax(teacher, dim=-1), index)
    return divergence * temperature**2


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of each next token of ``ids`` (``[batch, length]``) under ``logits``: ``[batch, length − 1]``."""
    predicted = logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), ids[:, 1:].reshape(-1),
                                             reduction="none").view(ids.shape[0], -1)
