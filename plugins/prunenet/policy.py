"""PruneNet's policy: one small network, shared by every layer, that scores FFN channels from weights.

For a layer's FFN input weight ``W`` (``[channels, hidden]``) the policy's keep-probability of
channel ``i`` is ``alpha_i = sigmoid((A(W) @ v)_i)`` with ``A: Linear(hidden -> width)`` and
``v`` a vector of ``width`` (the paper's parameterization, ``width`` = the FFN size). It never
sees data, only the rows of ``W``, so one trained policy serves every layer and every ratio.

Both training and slicing draw channels the authors' way: with logistic noise
``L = log eps - log(1 - eps)``, ``eps ~ U(0, 1)`` (the binary-concrete relaxation), the noisy
keep-probability is ``p = sigmoid(L + logit(alpha))`` and ``k`` channels are drawn without
replacement with weights ``p``. In float32 everything is computed from the logit ``A(W) @ v``
itself, never from ``log(alpha)``, so saturated channels give finite log-probabilities and no NaN;
under the authors' float16 autocast their own saturating ``log(alpha)`` path is kept on purpose
(:func:`noisy_logits`).

Initialization is the authors' too: ``A`` is ``nn.Linear``'s default and ``v ~ U(0, 1)``. That
scale matters: with ``v`` in a small symmetric range the initial logits of a layer spread about
0.06 (on SmolLM2-135M), so early samples are pure noise and the first updates fix one direction
for every layer; with ``U(0, 1)`` they spread about 2.3.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class KeepPolicy(nn.Module):
    """``alpha = sigmoid(A(W) @ v)``: one keep-probability per row of ``W``, for any layer."""

    def __init__(self, hidden: int, width: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.A = nn.Linear(hidden, width)
        self.v = nn.Parameter(torch.empty(width))
        # nn.Linear's own initialization, drawn from ``generator`` so a seed fixes the policy
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(hidden)
        nn.init.uniform_(self.A.bias, -bound, bound, generator=generator)
        nn.init.uniform_(self.v, 0.0, 1.0, generator=generator)  # the authors' torch.rand

    @property
    def hidden(self) -> int:
        return self.A.in_features

    @property
    def width(self) -> int:
        return self.A.out_features

    def logits(self, weight: torch.Tensor) -> torch.Tensor:
        """``logit(alpha) = A(W) @ v`` for every row of ``weight``, shape ``[rows]``.

        Evaluated right to left, ``W @ (A.weight^T v) + A.bias . v``: the same function and the
        same gradients as ``A(W) @ v``, but ``rows * hidden`` work instead of
        ``rows * hidden * width``, which is what makes training on a CPU take seconds per episode.
        ``weight`` may be held in 16 bits (:func:`~prunekit.plugins.prunenet.scoring.ffn_weights`); it is
        computed with in float32, as the model holds it.
        """
        direction = self.A.weight.T @ self.v
        return weight.float() @ direction + self.A.bias @ self.v


def logistic_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``log eps - log(1 - eps)`` for ``eps ~ U(0, 1)``, kept off 0 and 1 so it stays finite."""
    tiny = torch.finfo(torch.float32).tiny
    eps = torch.rand(shape, generator=generator).clamp_(tiny, 1 - torch.finfo(torch.float32).eps)
    return torch.log(eps) - torch.log1p(-eps)


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The authors' float16 autocast for ``precision="mixed"``, a no-op for ``"full"``."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.float16, enabled=precision == "mixed")


def noisy_logits(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``L + logit(alpha)``: the logit of the noisy keep-probability ``p``, with fresh noise.

    In float32 ``logit(alpha)`` is the policy's logit itself. Logits computed in float16 (under
    the authors' autocast) take the authors' own path, ``log(alpha) - log(1 - alpha)`` with
    ``alpha`` in float16: a channel whose ``alpha`` rounds to 1 gets ``p = 1`` and one whose
    ``alpha`` rounds to 0 gets ``p = 0`` and an infinite loss, after which the gradient scaler
    skips the step. That rounding decides which of the authors' optimizer steps happen, so it is
    reproduced rather than repaired (``precision="full"`` is the repaired path).
    Non-finite logits mean the policy diverged; they are reported rather than sampled."""
    if not torch.isfinite(logits).all():
        raise RuntimeError("PruneNet policy produced non-finite scores (the policy diverged)")
    noise = logistic_noise(logits.shape, generator).to(logits.device)
    if logits.dtype == torch.float16:
        alpha = torch.sigmoid(logits)
        return noise + torch.log(alpha) - torch.log(1 - alpha)
    return logits + noise


def draw(noisy: torch.Tensor, keep: int, generator: torch.Generator) -> torch.Tensor:
    """``keep`` channel indices drawn without replacement with weights ``sigmoid(noisy)``, in
    the order drawn (``torch.multinomial``, as the authors draw).

    The weights are floored at the smallest normal float, so channels whose probability
    underflows to zero can still fill the ``keep`` slots. ``torch.multinomial`` without
    replacement takes the top ``keep`` of ``p / q`` with ``q ~ Exp(1)``, so under one generator
    state the first ``keep`` of a longer draw are exactly a draw of ``keep``."""
    weights = torch.sigmoid(noisy.detach()).float().cpu().clamp_min(torch.finfo(torch.float32).tiny)
    return torch.multinomial(weights, keep, replacement=False, generator=generator).to(noisy.device)


def sample_keep(
    logits: torch.Tensor, keep: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One action: ``keep`` channel indices drawn from the noisy keep-probabilities, and the log of
    those probabilities (with gradient)."""
    noisy = noisy_logits(logits, generator)
    return draw(noisy, keep, generator), F.logsigmoid(noisy)


def draw_ranks(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Slicing scores from one seeded draw of every channel: the first channel drawn scores
    highest. The core's top ``k`` of these are the authors' prune-time draw of ``k`` channels
    (fresh noise, then ``torch.multinomial``), and one draw serves every ratio, nested."""
    order = draw(noisy_logits(logits, generator), logits.numel(), generator)
    ranks = torch.empty(logits.numel(), dtype=torch.float32)
    ranks[order.cpu()] = torch.arange(logits.numel(), 0, -1, dtype=torch.float32)
    return ranks
