"""PruneNet's policy: one small network, shared by every layer, that scores FFN channels from weights.

For a layer's FFN input weight ``W`` (``[channels, hidden]``) the policy's keep-probability of
channel ``i`` is ``alpha_i = sigmoid((A(W) @ v)_i)`` with ``A: Linear(hidden -> width)`` and
``v`` a vector of ``width`` (the paper's parameterization, ``width`` = the FFN size). It never
sees data, only the rows of ``W``, so one trained policy serves every layer and every ratio.

Exploration uses the binary-concrete relaxation: with logistic noise
``L = log eps - log(1 - eps)``, ``eps ~ U(0, 1)``, the noisy keep-probability is
``p = sigmoid(L + logit(alpha))``. Everything is computed from the logit ``A(W) @ v`` itself, never
from ``log(alpha)``, so saturated channels give finite log-probabilities and no NaN.
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
        nn.init.uniform_(self.v, -1 / math.sqrt(width), 1 / math.sqrt(width), generator=generator)

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
        """
        direction = self.A.weight.T @ self.v
        return weight @ direction + self.A.bias @ self.v


def logistic_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``log eps - log(1 - eps)`` for ``eps ~ U(0, 1)``, kept off 0 and 1 so it stays finite."""
    tiny = torch.finfo(torch.float32).tiny
    eps = torch.rand(shape, generator=generator).clamp_(tiny, 1 - torch.finfo(torch.float32).eps)
    return torch.log(eps) - torch.log1p(-eps)


def sample_keep(
    logits: torch.Tensor, keep: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One action: ``keep`` channel indices drawn without replacement, weighted by the noisy
    binary-concrete keep-probabilities, and the log of those probabilities (with gradient).

    The weights handed to ``torch.multinomial`` are floored at the smallest normal float, so
    channels whose probability underflows to zero can still fill the ``keep`` slots; non-finite
    logits mean the policy diverged and are reported rather than sampled.
    """
    if not torch.isfinite(logits).all():
        raise RuntimeError("PruneNet policy produced non-finite scores (the policy diverged)")
    noisy = logits + logistic_noise(logits.shape, generator).to(logits.device)
    weights = torch.sigmoid(noisy.detach()).float().cpu().clamp_min(torch.finfo(torch.float32).tiny)
    action = torch.multinomial(weights, keep, replacement=False, generator=generator)
    return action.to(logits.device), F.logsigmoid(noisy)
