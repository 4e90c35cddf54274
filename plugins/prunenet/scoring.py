"""PruneNet's ``score_importance``: the policy for the model, obtained and evaluated on its weights.

Apart from :mod:`prunekit.plugins.prunenet`, the module pluggy loads, because it needs torch.
"""

from __future__ import annotations

import logging

import torch

from prunekit.models import fingerprint
from prunekit.payloads import Dimension, Importance, ScoreRequest
from prunekit.plugins.prunenet import NAME, store
from prunekit.plugins.prunenet.policy import autocast, draw_ranks
from prunekit.plugins.prunenet.reward import ks_statistic, one_thread, spectrum
from prunekit.plugins.prunenet.settings import PruneNetOptions
from prunekit.plugins.prunenet.training import train
from prunekit.slicing import keep_plan, kept_units

log = logging.getLogger(__name__)

SELECTIONS = {
    "draw": "drawn without replacement from the noisy keep-probabilities (seeded by draw_seed), as the authors slice",
    "topk": "top-k of the noise-free keep-logits",
}


def ffn_weights(request: ScoreRequest) -> list[torch.Tensor]:
    """Each layer's FFN input weight ``[channels, hidden]``, held in the narrowest float type that
    keeps its values exactly (:func:`exact_copy`), read a layer at a time (finite: a model with a
    non-finite weight is refused when it loads, :func:`prunekit.models.first_non_finite`).

    Training needs every layer's matrix at once, and a run streaming a model larger than memory
    (``--stream``) holds these and one layer: a 16-bit checkpoint's weights are 16-bit numbers
    however wide the model computes, so they take half the memory of float32 copies and give
    the same policy, scores and spectra."""
    return [exact_copy(request.architecture.ffn_input_weight(layer).detach())
            for layer in request.architecture.layers(request.model)]


def exact_copy(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in bfloat16 or float16 where that holds every value exactly, else in float32."""
    for dtype in (torch.bfloat16, torch.float16):
        narrow = weight.to(dtype)
        if torch.equal(narrow.to(weight.dtype), weight):
            return narrow
    return weight.float()


def obtain_policy(
    request: ScoreRequest, options: PruneNetOptions, weights: list[torch.Tensor], seed: int, model_id: str
) -> tuple[store.StoredPolicy, str]:
    """The policy to score with and where it came from: ``file`` (``policy`` option), ``cache``
    or ``trained`` (and then cached, unless ``cache`` is off)."""
    hidden = weights[0].shape[1]
    if options.policy is not None:
        return store.load(options.policy.expanduser(), hidden), "file"
    path = store.cached_path(model_id, options.training_key(seed))
    if options.cache and store.exists(path):
        log.info("PruneNet: reusing the policy in %s", path)
        return store.load(path, hidden), "cache"
    train_ratio = options.train_ratio if options.train_ratio is not None else request.ratio
    keep = [kept_units(weight.shape[0], train_ratio) for weight in weights]
    trained = train(weights, keep, options, seed)
    meta = {
        "hidden": trained.policy.hidden,
        "width": trained.policy.width,
        "fingerprint": model_id,
        "model": request.config.model,
        "settings": options.training_key(seed),
        "train_ratio": train_ratio,
        "learning_curve": trained.learning_curve,
        "best_episode": trained.best_episode,
        "optimizer_steps": trained.steps,
        "train_seconds": round(trained.seconds, 3),
    }
    if options.cache:
        store.save(trained.policy, meta, path)
    return store.StoredPolicy(trained.policy, meta, path if options.cache else None), "trained"


def score(request: ScoreRequest) -> list[Importance]:
    """The ``score_importance`` hook: the policy (trained, cached or given) evaluated on every
    layer's FFN input weight, and the KS statistic of the slice it gives at the run's ratio."""
    options = PruneNetOptions.model_validate(request.options(NAME))
    seed = options.seed if options.seed is not None else request.config.seed
    weights = ffn_weights(request)
    model_id = fingerprint(request.model)
    stored, source = obtain_policy(request, options, weights, seed, model_id)
    policy = stored.policy.to(weights[0].device)
    draw_seed = seed if options.draw_seed is None else options.draw_seed
    generator = torch.Generator().manual_seed(draw_seed)
    with torch.no_grad(), autocast(options.precision, weights[0].device):
        logits = [policy.logits(weight) for weight in weights]
        if options.selection == "draw":
            scores = [draw_ranks(layer_logits, generator) for layer_logits in logits]
        else:
            scores = [layer_logits.float().cpu() for layer_logits in logits]
    if stored.meta.get("fingerprint") != model_id:
        log.warning("PruneNet: the policy %s was trained on other weights (%s, this model is %s)",
                    stored.path, stored.meta.get("fingerprint"), model_id)
    importance = Importance(Dimension.FFN, scores)
    plan = keep_plan([importance], request.ratio, request.architecture, request.model)
    with one_thread():
        statistics = [
            ks_statistic(spectrum(weight), spectrum(weight[keep[Dimension.FFN].to(weight.device)]))
            for weight, keep in zip(weights, plan)
        ]
    importance.report = {
        "criterion": "PruneNet policy keep-logit A(W)·v, trained on a KS spectrum reward",
        "selection": SELECTIONS[options.selection],
        "settings": options.model_dump(mode="json") | {"seed": seed, "draw_seed": draw_seed},
        "policy": {
            "source": source,
            "path": None if stored.path is None else str(stored.path),
            "trained_on": stored.meta.get("fingerprint"),
            "model_fingerprint": model_id,
            "train_ratio": stored.meta.get("train_ratio"),
            "train_seconds": stored.meta.get("train_seconds"),
            "parameters": sum(p.numel() for p in policy.parameters()),
        },
        "learning_curve": stored.meta.get("learning_curve"),
        "best_episode": stored.meta.get("best_episode"),
        "optimizer_steps": stored.meta.get("optimizer_steps"),
        "ks_statistic": {"mean": sum(statistics) / len(statistics), "per_layer": statistics},
    }
    return [importance]
