"""PruneNet's reward: how well a row-sliced weight keeps the shape of the original's spectrum.

Removing rows of ``W`` shrinks and skews its singular values (they interlace with the original
ones); the reward is ``1 / D`` with ``D`` the two-sample Kolmogorov-Smirnov statistic between the
singular values of ``W`` and of ``W[kept]``, so a policy that earns it keeps the spectrum's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from scipy.stats import ks_2samp

REWARD_CAP = 1000.0
"""The reward for ``D <= 1 / REWARD_CAP``, identical spectra (``D = 0``) included."""


def spectrum(weight: torch.Tensor) -> torch.Tensor:
    """The singular values of ``weight`` (ascending, float64, on the CPU).

    Taken as square roots of the eigenvalues of the Gram matrix of the shorter side, in float64:
    the same ``min(rows, columns)`` values as an SVD (squaring the condition number costs nothing
    in float64 for weight matrices), and about twice as fast on a CPU, which matters because
    training takes one spectrum per layer per episode.
    """
    matrix = weight.detach().to(torch.float64)
    gram = matrix @ matrix.T if matrix.shape[0] < matrix.shape[1] else matrix.T @ matrix
    return torch.linalg.eigvalsh(gram).clamp_min_(0).sqrt_().cpu()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch (and its LAPACK) on one thread for the block, then restore the thread count.

    The spectra here come from ``hidden x hidden`` eigenproblems (576 for SmolLM2) that a second
    thread barely speeds up, while on a CPU shared with other jobs OpenMP's waiting threads made
    them 5-10 times slower in measurements on the 2-core development machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ks_statistic(original: torch.Tensor, sliced: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic ``D`` between two sets of singular values."""
    return float(ks_2samp(original.numpy(), sliced.numpy()).statistic)


def reward(statistic: float) -> float:
    """``1 / D``, capped at :data:`REWARD_CAP` (so ``D = 0`` earns the cap, not infinity)."""
    return REWARD_CAP if statistic <= 1 / REWARD_CAP else 1 / statistic
