"""``eval``: the ``core eval`` command, one model measured as it is with the active evaluators.

Any model ``--model`` names (a run's ``model/``, a Hub id, a built-in name) goes through the same
evaluators, settings and seed as a run's ``evaluate`` step, so its figures compare with a report's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from prunekit import hookimpl
from prunekit.config import RunConfig
from prunekit.payloads import Metrics

if TYPE_CHECKING:
    import typer

    from prunekit.manager import Plugins


class Evaluation(BaseModel):
    """What ``core eval`` prints: one model's metrics, measured as a run measures them."""

    prunekit_version: str
    model: str
    params: int
    disk_bytes: int | None = None
    metrics: Metrics
    versions: dict[str, str]
    config: RunConfig


def evaluate(config: RunConfig, plugins: Plugins) -> Evaluation:
    """Measure ``config.model`` as it is with the active evaluators (stage ``after``, as a run's)."""
    from prunekit import __version__, output, pipeline
    from prunekit.models import load_model  # torch and transformers: once the input is known to be good
    from prunekit.payloads import EvalRequest

    config, hooks = pipeline.resolve(config, plugins)
    loaded = load_model(config.model, dtype=config.dtype, device=config.device)
    metrics = hooks.evaluate(EvalRequest(loaded.model, loaded.tokenizer, config, "after"))
    return Evaluation(prunekit_version=__version__, model=config.model,
                      params=pipeline.count_parameters(loaded.model),
                      disk_bytes=output.weight_bytes(loaded.model.name_or_path), metrics=metrics,
                      versions=output.package_versions(), config=config)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from prunekit.plugins.commands.cli import eval_

    cli.command("eval")(eval_)
