"""``eval``: the ``core eval`` command, one model measured as it is with the active evaluators.

Any model ``--model`` names (a run's ``model/``, a Hub id, a built-in name) goes through the same
evaluators, settings and seed as a run's ``evaluate`` step, so its figures compare with a report's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from prunekit import hookimpl
from prunekit.config import RunConfig
from prunekit.errors import UsageError
from prunekit.payloads import Metrics

if TYPE_CHECKING:
    from pathlib import Path

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


def evaluate(config: RunConfig, plugins: Plugins, offload: Path | None = None,
             max_memory: str = "2GiB") -> Evaluation:
    """Measure ``config.model`` as it is with the active evaluators (stage ``after``, as a run's); with ``offload``,
    placed by accelerate within ``max_memory`` of CPU memory and the rest in that folder (:func:`offloaded`)."""
    from prunekit import __version__, output, pipeline
    from prunekit.models import load_model  # torch and transformers: once the input is known to be good
    from prunekit.payloads import EvalRequest

    config, hooks = pipeline.resolve(config, plugins)
    loaded = load_model(config.model, dtype=config.dtype, device=config.device) if offload is None \
        else offloaded(config, offload, max_memory)
    metrics = hooks.evaluate(EvalRequest(loaded.model, loaded.tokenizer, config, "after"))
    return Evaluation(prunekit_version=__version__, model=config.model,
                      params=pipeline.count_parameters(loaded.model),
                      disk_bytes=output.weight_bytes(loaded.model.name_or_path), metrics=metrics,
                      versions=output.package_versions(), config=config)


def offloaded(config: RunConfig, folder: Path, max_memory: str):
    """The model placed by accelerate (``device_map="auto"``): the GPUs, then up to ``max_memory`` of CPU memory,
    then ``folder`` on disk, each offloaded layer loaded for every forward pass (docs/streaming.md). For a model that
    does not fit; slow."""
    import torch
    from accelerate.utils import get_max_memory
    from transformers import AutoModelForCausalLM

    from prunekit.models import LoadedModel, resolve_device, resolve_dtype
    from prunekit.plugins.streaming.run import checkpoint_dir, load_tokenizer

    directory = checkpoint_dir(config.model)
    memory = {**get_max_memory(), "cpu": max_memory}
    dtype = resolve_dtype(config.dtype, resolve_device(config.device))
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, device_map="auto", max_memory=memory,
                                                     offload_folder=folder)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {config.model!r} offloaded: {' '.join(str(exc).split())}") from exc
    return LoadedModel(model.eval(), load_tokenizer(directory), torch.float32)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from prunekit.plugins.commands.cli import eval_

    cli.command("eval")(eval_)
