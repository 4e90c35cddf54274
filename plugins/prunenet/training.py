"""Training PruneNet's policy with REINFORCE, from the FFN weights alone.

One episode walks the layers in order. At layer ``i`` the policy samples which ``k`` channels to
keep, the reward ``r_i`` is ``1 / KS`` between the spectra of ``W_i`` and ``W_i[kept]``, and one
AdamW step follows on ``loss_i = -(sum of log p[kept]) * discount**i * r_i`` (gradients clipped
between ``backward`` and ``step``, where clipping has an effect). The policy kept at the end is
the one as it stood after the episode with the highest total reward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunekit.plugins.prunenet.policy import KeepPolicy, sample_keep
from prunekit.plugins.prunenet.reward import ks_statistic, one_thread, reward, spectrum
from prunekit.plugins.prunenet.settings import PruneNetOptions
from prunekit.progress import bars_hidden

log = logging.getLogger(__name__)


@dataclass
class TrainedPolicy:
    policy: KeepPolicy
    learning_curve: list[float]
    """Total reward (summed over layers, undiscounted) of each episode."""
    best_episode: int
    """Index into ``learning_curve`` of the episode whose policy was kept."""
    seconds: float


@contextmanager
def episode_progress(episodes: int) -> Iterator[Callable[[float, float], None]]:
    """A progress bar over episodes on stderr showing the last and best episode reward; hidden
    when stderr is not a terminal or ``PRUNEKIT_NO_PROGRESS`` is set (as every prunekit bar)."""
    console = Console(stderr=True)
    columns = (TextColumn("PruneNet policy"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[reward]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=bars_hidden(console)) as progress:
        task = progress.add_task("episodes", total=episodes, reward="")

        def advance(last: float, best: float) -> None:
            progress.update(task, advance=1, reward=f"reward {last:.2f} (best {best:.2f})")

        yield advance


def train(weights: list[torch.Tensor], keep: list[int], options: PruneNetOptions, seed: int) -> TrainedPolicy:
    """A policy trained on ``weights`` (each ``[channels, hidden]``, float32) to keep ``keep[i]``
    rows of layer ``i``. Deterministic for a given seed on a given device."""
    with one_thread():
        return _train(weights, keep, options, seed)


def _train(weights: list[torch.Tensor], keep: list[int], options: PruneNetOptions, seed: int) -> TrainedPolicy:
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    hidden = weights[0].shape[1]
    width = max(weight.shape[0] for weight in weights)
    policy = KeepPolicy(hidden, width, generator).to(weights[0].device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=options.learning_rate)
    originals = [spectrum(weight) for weight in weights]

    curve: list[float] = []
    best_state: dict[str, torch.Tensor] = {}
    best_episode = 0
    with episode_progress(options.episodes) as advance:
        for episode in range(options.episodes):
            total = 0.0
            for index, (weight, count, original) in enumerate(zip(weights, keep, originals)):
                action, log_probs = sample_keep(policy.logits(weight), count, generator)
                gain = reward(ks_statistic(original, spectrum(weight[action])))
                loss = -log_probs[action].sum() * options.discount**index * gain
                optimizer.zero_grad()
                loss.backward()
                if options.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), options.max_grad_norm)
                optimizer.step()
                total += gain
            curve.append(total)
            if total >= max(curve):
                best_episode = episode
                best_state = {name: value.detach().clone() for name, value in policy.state_dict().items()}
            log.info("PruneNet episode %d/%d: reward %.3f", episode + 1, options.episodes, total)
            advance(total, max(curve))
    policy.load_state_dict(best_state)
    return TrainedPolicy(policy, curve, best_episode, time.perf_counter() - start)
