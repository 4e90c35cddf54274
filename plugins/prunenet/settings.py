"""PruneNet's settings (``options: {prunenet: {...}}``, or ``-o prunenet.KEY=VALUE`` on the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PruneNetOptions(BaseModel):
    """Training and slicing default to the authors' own code (their PyPI package
    ``efficient-pruners`` 0.1.0): 20 episodes, lr 1e-3, discount 0.99, one step per episode,
    gradient norm clipped at 1.0, and a seeded prune-time draw."""

    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(default=20, ge=1, description="Passes over all layers while training the policy.")
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate (the paper's scripts also use 1e-4).")
    discount: float = Field(default=0.99, gt=0, le=1, description="Layer i's reward is weighted by discount**i.")
    seed: int | None = Field(default=None, description="Seed of policy initialization and sampling; default the run's --seed.")
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Clip the policy's gradient norm before each step; null to disable."
    )
    update: Literal["episode", "layer"] = Field(
        default="episode",
        description="episode: one optimizer step per episode on the summed layer losses (the authors' package); "
        "layer: a step after each layer's loss (their GitHub scripts).",
    )
    precision: Literal["mixed", "full"] = Field(
        default="mixed",
        description="mixed: float16 autocast with a GradScaler, as the authors train (steps whose float16 gradients "
        "overflow are skipped); full: float32 throughout.",
    )
    selection: Literal["draw", "topk"] = Field(
        default="draw",
        description="draw: the kept channels are drawn from the noisy keep-probabilities with draw_seed, as the "
        "authors slice; topk: the top-k of the noise-free keep-logits.",
    )
    draw_seed: int | None = Field(default=None, description="Seed of the prune-time draw; default: the policy's seed.")
    train_ratio: float | None = Field(
        default=None, gt=0, lt=1,
        description="Ratio the policy is trained at. Default: the ratio of the run that first trains it; "
        "any later ratio reuses that policy.",
    )
    policy: Path | None = Field(
        default=None, description="Load this policy (.safetensors beside its .json) instead of training or the cache."
    )
    cache: bool = Field(
        default=True, description="Reuse and store policies under $PRUNEKIT_CACHE/policies, keyed by the model's weights."
    )

    def training_key(self, seed: int) -> dict[str, object]:
        """The settings a trained policy depends on: equal keys mean the same policy.

        The training ratio enters only when it was set explicitly; left at its default, the first
        run's ratio trains the policy and every later ratio reuses it ("you only prune once")."""
        key: dict[str, object] = {
            "episodes": self.episodes,
            "learning_rate": self.learning_rate,
            "discount": self.discount,
            "seed": seed,
            "max_grad_norm": self.max_grad_norm,
            "update": self.update,
            "precision": self.precision,
        }
        if self.train_ratio is not None:
            key["train_ratio"] = self.train_ratio
        return key
