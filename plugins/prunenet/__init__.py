"""``prunenet``: calibration-free FFN slicing by policy learning (Sengupta et al., ICLR 2025).

A policy network learns, from the FFN input weights alone, which channels to keep so that each
weight's singular-value spectrum keeps its shape (:mod:`.training`). The policy does not depend
on the ratio, so it is trained once per model and settings, cached (:mod:`.store`) and reused at
any ratio: a second run at another ratio only evaluates the policy, which takes seconds.

Slicing draws the kept channels from the policy as the authors do (fresh noise, then
``torch.multinomial`` without replacement), from a generator seeded by ``draw_seed``, so a seed
fixes the result. One draw orders every channel and the core keeps the first
``int((1 - r) * channels)`` of each layer, so the kept sets are nested across ratios. The top-k of
the noise-free keep-logits (``selection="topk"``) is the alternative; it applies the policy's one
direction to every layer deterministically, which on SmolLM2-135M is worse (docs/prunenet.md).

The policy network, its training and the scoring live in :mod:`.scoring` and the modules it
imports, loaded when a run scores: loading the plugin needs no torch.
"""

from __future__ import annotations

from pydantic import BaseModel

from prunekit import hookimpl
from prunekit.payloads import Importance, ScoreRequest
from prunekit.plugins.prunenet.settings import PruneNetOptions

NAME = "prunenet"


@hookimpl
def plugin_options() -> type[BaseModel]:
    return PruneNetOptions


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    from prunekit.plugins.prunenet.scoring import score

    return score(request)
