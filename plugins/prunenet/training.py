"""Training PruneNet's policy with REINFORCE, from the FFN weights alone.

The schedule is the authors' (their PyPI package ``efficient-pruners`` 0.1.0). One episode first
walks the layers in order with the policy as it stands: at layer ``i`` it draws which ``k``
channels to keep, and the reward ``r_i`` is ``1 / KS`` between the spectra of ``W_i`` and
``W_i[kept]``. Then an update pass takes, per layer, ``loss_i = -(sum of log p[kept]) *
discount**i * r_i`` with fresh noise in ``p``; by default the gradients of all layers add up and
one AdamW step follows per episode (``update="layer"``: a step after each layer, as their GitHub
scripts do). Gradients are clipped between ``backward`` and ``step``, where clipping has an effect
(their scripts clip right after ``zero_grad``). The policy kept at the end is the one as it stood
after the episode with the highest total reward.
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
from torch.nn import functional as F

from prunekit.plugins.prunenet.policy import KeepPolicy, autocast, noisy_logits, sample_keep
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
    steps: dict[str, int]
    """Optimizer steps ``taken`` and ``skipped`` (mixed precision skips a step whose gradients
    overflowed float16, as the authors' ``GradScaler`` does)."""
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

    device = weights[0].device.type
    mixed = options.precision == "mixed"
    scaler = torch.amp.GradScaler(device, enabled=mixed)

    curve: list[float] = []
    best_state: dict[str, torch.Tensor] = {}
    best_episode = 0
    steps = {"taken": 0, "skipped": 0}

    def step() -> None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        if options.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), options.max_grad_norm)
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skipped when a gradient overflowed float16
        scaler.update()
        steps["skipped" if mixed and scaler.get_scale() < scale else "taken"] += 1
        optimizer.zero_grad()

    with episode_progress(options.episodes) as advance:
        for episode in range(options.episodes):
            actions, gains = [], []
            with torch.no_grad():  # the episode's actions, all drawn from the policy as it stands
                for weight, count, original in zip(weights, keep, originals):
                    with autocast(options.precision, device):
                        action, _ = sample_keep(policy.logits(weight), count, generator)
                    actions.append(action)
                    gains.append(reward(ks_statistic(original, spectrum(weight[action]))))
            for index, (weight, action, gain) in enumerate(zip(weights, actions, gains)):
                with autocast(options.precision, device):
                    log_probs = F.logsigmoid(noisy_logits(policy.logits(weight), generator))
                    loss = -log_probs[action].sum() * options.discount**index * gain
                scaler.scale(loss).backward()
                if options.update == "layer":
                    step()
            if options.update == "episode":
                step()
            total = sum(gains)
            if not curve or total > max(curve):  # the first of equal bests, as the authors keep it
                best_episode = episode
                best_state = {name: value.detach().clone() for name, value in policy.state_dict().items()}
            curve.append(total)
            log.info("PruneNet episode %d/%d: reward %.3f", episode + 1, options.episodes, total)
            advance(total, max(curve))
    policy.load_state_dict(best_state)
    return TrainedPolicy(policy, curve, best_episode, steps, time.perf_counter() - start)
