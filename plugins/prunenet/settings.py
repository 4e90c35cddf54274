"""PruneNet's settings (``options: {prunenet: {...}}``, or ``-o prunenet.KEY=VALUE`` on the CLI)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PruneNetOptions(BaseModel):
    """Training hyperparameters default to the paper's (20 episodes, lr 1e-3, discount 0.99)."""

    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(default=20, ge=1, description="Passes over all layers while training the policy.")
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate (the paper's scripts also use 1e-4).")
    discount: float = Field(default=0.99, gt=0, le=1, description="Layer i's reward is weighted by discount**i.")
    seed: int | None = Field(default=None, description="Seed of policy initialization and sampling; default the run's --seed.")
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Clip the policy's gradient norm before each step; null to disable."
    )
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
        }
        if self.train_ratio is not None:
            key["train_ratio"] = self.train_ratio
        return key
