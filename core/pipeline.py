"""One run: load → evaluate → score → slice → recover → evaluate → save, every step a hook.

The pipeline knows no algorithm by name; it orders the hook calls, times them and writes the output contract
(docs/hooks.md). All bad input is rejected before the first expensive step.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from prunekit import __version__, baselines, files, memory, output, rundir
from prunekit.errors import UsageError, keeps_on_interrupt
from prunekit.payloads import (Dimension, EvalRequest, Metrics, RecoverRequest, ReportRequest, ScoreRequest,
                               SliceRequest, StreamRequest)
from prunekit.progress import track
from prunekit.slicing import keep_plan, kept_layers
from prunekit.uncompressed import UncompressedLayers

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from prunekit.architectures import Architecture
    from prunekit.config import RunConfig
    from prunekit.hooks import Hooks
    from prunekit.manager import Plugins
    from prunekit.payloads import Importance

log = logging.getLogger(__name__)


class Stopwatch:
    """Seconds and resident memory (MB at the start, peak during) per named stage, in run order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.memory: dict[str, output.StageMemory] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("%s…", name)
        start_mb = memory.current_mb()
        memory.reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)
            # rounded like the run's peak, so that no stage's peak exceeds the run's in the report
            self.memory[name] = output.StageMemory(
                start_mb=None if start_mb is None else round(start_mb, 1), peak_mb=round(memory.peak_mb(), 1))

    def peak_mb(self) -> float:
        """The run's peak resident memory: each stage's reset of the kernel's high-water mark also lowers the lifetime
        maximum it reports, so the stages' peaks count too."""
        return max([memory.lifetime_peak_mb(), *(stage.peak_mb for stage in self.memory.values())])


def count_parameters(model: nn.Module) -> int:
    """Unique parameters: tied embeddings count once, as the model card counts them."""
    return sum(p.numel() for p in model.parameters())


def _shape_copy(module: nn.Module) -> nn.Module:
    """``module`` on the meta device: its shapes without its data, to slice for counting at no memory cost."""
    import torch
    from torch import nn

    memo: dict[int, object] = {id(tensor): torch.empty_like(tensor, device="meta") for tensor in module.buffers()}
    memo.update({id(tensor): nn.Parameter(torch.empty_like(tensor, device="meta"), requires_grad=tensor.requires_grad)
                 for tensor in module.parameters()})
    return copy.deepcopy(module, memo)


def held_by_units(layers: nn.ModuleList, architecture: Architecture, dimension: Dimension) -> int | None:
    """The parameters the units of ``dimension`` hold in ``layers``: what slicing every unit away would remove,
    counted on shape-only copies. ``None`` where the adapter cannot slice a layer to nothing."""
    import torch

    held = 0
    for layer in layers:
        shadow = _shape_copy(layer)
        whole = count_parameters(shadow)
        try:
            architecture.slice(shadow, dimension, torch.arange(0))
        except (UsageError, RuntimeError, ValueError, IndexError) as exc:
            log.debug("cannot count the %s parameters of %s: %s", dimension.value, type(layer).__name__, exc)
            return None
        held += whole - count_parameters(shadow)
    return held


def parameter_parts(model: nn.Module, architecture: Architecture) -> tuple[int, dict[str, int]]:
    """The parameters inside the decoder layers, and per dimension within them (FFN channels, heads) the parameters
    its units hold, from the model's own modules."""
    layers = architecture.layers(model)
    held = {dimension.value: held_by_units(layers, architecture, dimension) for dimension in Dimension
            if dimension in architecture.dimensions and dimension is not Dimension.LAYERS}
    return count_parameters(layers), {name: count for name, count in held.items() if count is not None}


def with_evaluator_options(config: RunConfig, evaluators: list[str]) -> RunConfig:
    """``config`` with an (empty) options entry for every evaluator that will measure, so that their settings are
    validated up front and their defaults recorded, whether or not the run named them."""
    missing = {name: {} for name in evaluators if name not in config.options}
    return config.model_copy(update={"options": {**config.options, **missing}}) if missing else config


def slice_by_importance(importances: list[Importance], config: RunConfig, model: PreTrainedModel,
                        architecture: Architecture, hooks: Hooks,
                        uncompressed: UncompressedLayers | None = None) -> tuple[dict[str, object], bool]:
    """Slice ``model`` in place at the config's ratios by a pruner's scores; return the pruning report per dimension
    and whether the result is a stock checkpoint. With ``uncompressed``, each layer that stays is recorded there just
    before it is sliced. A search calls it too, to slice copies of a model at many ratios exactly as a run would."""
    pruning: dict[str, object] = {}
    for importance in importances:
        architecture.require(importance.dimension)
        pruning[importance.dimension.value] = importance.report
    plan = keep_plan(importances, config.ratio, architecture, model, ratios=config.ratios)
    depth = kept_layers(importances, config.ratio_for(Dimension.LAYERS), len(plan))
    if depth is not None:  # drop whole layers first; the survivors keep their own plans
        architecture.drop_layers(model, depth)
        removed = sorted(set(range(len(plan))) - set(depth))
        pruning[Dimension.LAYERS.value] = {**pruning[Dimension.LAYERS.value], "removed_layers": removed}
        plan = [plan[index] for index in depth]
    for index, keep in enumerate(track(plan, "slicing layers")):
        if uncompressed is not None:
            layer = architecture.layers(model)[index]
            lost = {dim: units for dim, units in keep.items() if len(units) < architecture.units(layer, dim)}
            uncompressed.keep(index, layer, lost)
        hooks.slice_layer(SliceRequest(model, architecture, index, keep))
    return pruning, architecture.sync_config(model)


def recover(hooks: Hooks, recoverers: list[str],
            request: RecoverRequest) -> tuple[PreTrainedModel, list[output.RecoveryStep]]:
    """Run the recovery plugins in turn, each on the previous one's model; return the final model and one step per
    plugin with its report, seconds and perplexity before and after (``stage="recovery"``). The last step's "after"
    is left for the caller to fill from the run's after-evaluation, which would otherwise measure the same model
    twice (a perplexity costs about 15 s on 2 cores). A step leaving a weight non-finite fails the run."""
    model, steps = request.model, []
    if not recoverers:
        return model, steps

    def perplexity() -> float | None:
        return hooks.evaluate(EvalRequest(model, request.tokenizer, request.config, "recovery")).perplexity

    before = perplexity()
    for name in recoverers:
        start = time.perf_counter()
        recovered = hooks.recover(name, replace(request, model=model))
        seconds = round(time.perf_counter() - start, 3)
        if recovered is not None:
            model = recovered.model
            require_finite(model, f"recover ({name})")
        after = before if recovered is None else (None if name == recoverers[-1] else perplexity())
        steps.append(output.RecoveryStep(plugin=name, report=recovered.report if recovered is not None else None,
                                         seconds=seconds, perplexity_before=before, perplexity_after=after))
        before = after
    return model, steps


def require_finite(model: nn.Module, stage: str) -> None:
    """A stage that turned a weight into NaN or Inf has failed: its model is no result to evaluate or save."""
    from prunekit.models import first_non_finite

    if (tensor := first_non_finite(model)) is not None:
        raise RuntimeError(f"{stage} left non-finite values (NaN or Inf) in {tensor}; nothing was saved")


def _one_each(hooks: Hooks) -> None:
    """A first-result hook answers with one plugin's result and silently drops the others', so two pruners (or two
    whole-model slicers) in one run would quietly ignore one of them."""
    for role, names in (("score importance", hooks.scorers()), ("slice the whole model", hooks.model_slicers())):
        if len(names) > 1:
            raise UsageError(f"{' and '.join(names)} both {role}, and a run uses one; select one of them")


def resolve(config: RunConfig, plugins: Plugins) -> tuple[RunConfig, Hooks]:
    """``config`` with every plugin's settings validated and defaulted (the command a run directory records), and the
    hooks of its plugins."""
    hooks = plugins.hooks(config.plugins)
    return plugins.resolve_options(with_evaluator_options(config, hooks.evaluators())), hooks


def run(config: RunConfig, plugins: Plugins) -> output.Report:
    """Compress ``config.model`` with the selected plugins; write and return the report."""
    config, hooks = resolve(config, plugins)
    if config.compresses and not hooks.has_pruner():
        ratio = max([config.ratio, *config.ratios.values()])
        raise UsageError(f"ratio {ratio:g} needs a pruner, and none of the selected plugins "
                         f"({', '.join(config.plugins) or 'none'}) scores importance")
    _one_each(hooks)
    if hooks.model_slicers() and hooks.scorers():
        raise UsageError(f"{', '.join(hooks.model_slicers())} slices the whole model and cannot share a run with "
                         f"the per-layer pruner {', '.join(hooks.scorers())}; select one")
    if config.stream and (whole := hooks.model_slicers() + hooks.recoverers(config.plugins)):
        raise UsageError(f"--stream holds one layer in memory, and {', '.join(whole)} needs the whole model; "
                         "run without --stream")
    directory = rundir.choose(config)
    existed = directory.exists()
    with keeps_on_interrupt(lambda: f"no result was saved; {_kept(directory)}; "
                                    f"rerun the same command with --output {directory} to resume"):
        try:
            return _compress(config, plugins, hooks, directory)
        except BaseException:
            rundir.release(directory, existed)
            raise


def _kept(directory: Path) -> str:
    """What an interrupted run leaves for its rerun (docs/interruptions.md)."""
    held = next((f"{what} in {directory / name}" for name, what in
                 ((rundir.RESUME, "the compressed model"), (rundir.SCRATCH, "training checkpoints"))
                 if (directory / name).is_dir()), None)
    return ", ".join(filter(None, [held, f"finished baselines, policies and tokenized text in {files.cache_root()}"]))


def _compress(config: RunConfig, plugins: Plugins, hooks: Hooks, directory: Path) -> output.Report:
    from prunekit.models import load_model  # torch and transformers: once the input is known to be good

    clock = Stopwatch()
    if config.stream:
        return _streamed(config, hooks, clock, directory)
    with clock.stage("load"):
        loaded = load_model(config.model, dtype=config.dtype, device=config.device)
    model, tokenizer, storage_dtype = loaded.model, loaded.tokenizer, loaded.storage_dtype
    bytes_before = output.weight_bytes(model.name_or_path)
    del loaded  # from here on the model may be replaced (a resumed run's, a merged one)
    architecture = hooks.architecture_for(model)
    params_before = count_parameters(model)
    layers_before, units_before = parameter_parts(model, architecture)

    with clock.stage("evaluate_before"):
        before, baseline = baselines.evaluate_before(hooks, plugins, EvalRequest(model, tokenizer, config, "before"))

    kept = rundir.Resume(directory)
    if (state := kept.state()) is None:
        compressed, state = _compressed(config, hooks, clock, model, tokenizer, architecture, directory)
        del model  # a recovery may have returned another object; only the compressed one counts now
        kept.keep(compressed, tokenizer, state)  # the recovered model supersedes the training checkpoints
        shutil.rmtree(directory / rundir.SCRATCH, ignore_errors=True)
    else:
        rundir.claim(directory, config)
        log.warning("resuming the run in %s from its compressed model (%s)", directory,
                    ", ".join(state["timings"]) or "no compression")
        weight = next(model.parameters())
        dtype, device = weight.dtype, weight.device
        del model, weight  # before the kept model loads, so that the two never share the memory
        compressed = kept.model(dtype, device)
        clock.seconds.update(state["timings"])
        clock.memory.update({name: output.StageMemory(**values) for name, values in state["memory"].items()})
    recovery = [output.RecoveryStep(**step) for step in state["recovery"]]

    if (after := kept.after(state)) is None:
        with clock.stage("evaluate_after"):
            after = hooks.evaluate(EvalRequest(compressed, tokenizer, config, "after"))
        kept.record_after(after, _stages(clock, ["evaluate_after"]))
    if recovery and recovery[-1].perplexity_after is None:
        recovery[-1].perplexity_after = after.perplexity

    with clock.stage("save"):
        files.save_model(compressed.to(storage_dtype), tokenizer, directory / "model")
    params = params_report(params_before, layers_before, units_before, compressed, architecture)
    report = _finish(config, hooks, clock, directory, params=params, metrics={"before": before, "after": after},
                     stock=state["stock"], pruning=state["pruning"], recovery=recovery, bytes_before=bytes_before,
                     baseline=baseline)
    kept.clear()
    return report


def _streamed(config: RunConfig, hooks: Hooks, clock: Stopwatch, directory: Path) -> output.Report:
    """``--stream`` (docs/streaming.md): a layer at a time, so with no evaluation, which needs the whole model."""
    rundir.claim(directory, config)
    streamed = hooks.compress_streaming(StreamRequest(config, hooks, directory / "model", clock.stage))
    log.warning("--stream: evaluation skipped (it needs the whole model in memory); see docs/streaming.md")
    return _finish(config, hooks, clock, directory, params=streamed.params, stock=streamed.stock,
                   metrics={"before": Metrics(), "after": Metrics()}, pruning=streamed.pruning, recovery=[],
                   bytes_before=output.weight_bytes(streamed.source), baseline=None)


def _finish(config: RunConfig, hooks: Hooks, clock: Stopwatch, directory: Path, *, params: output.Params,
            bytes_before: int | None, **parts: object) -> output.Report:
    """Write the report of a run whose model is saved: the renderers' files, then ``report.json``, which marks the
    run finished."""
    report = output.Report(
        prunekit_version=__version__, model=config.model, plugins=config.plugins, ratio=config.ratio, params=params,
        timings=clock.seconds, peak_rss_mb=round(clock.peak_mb(), 1), memory=clock.memory,
        versions=output.package_versions(), config=config.model_copy(update={"output": directory}),
        disk_bytes=output.DiskBytes(before=bytes_before, after=output.weight_bytes(directory / "model")), **parts)
    hooks.render_report(ReportRequest(report, directory))
    files.write_text(directory / rundir.REPORT_FILE, report.model_dump_json(indent=2) + "\n")  # the run is finished
    return report


def _compressed(config: RunConfig, hooks: Hooks, clock: Stopwatch, model: PreTrainedModel,
                tokenizer: PreTrainedTokenizerBase | None, architecture: Architecture,
                directory: Path) -> tuple[PreTrainedModel, dict[str, object]]:
    """Score, slice and recover ``model``; return it with what the report needs of those stages
    (:class:`prunekit.rundir.Resume` keeps both, for a rerun after a kill)."""
    recoverers, done = hooks.recoverers(config.plugins), set(clock.seconds)
    pruning: dict[str, object] = {}
    stock = True
    with ExitStack() as stack:  # the recorded uncompressed layers live until recovery is done
        uncompressed = None
        if config.compresses and hooks.model_slicers():  # e.g. rotate-and-slice of the hidden width
            with clock.stage("slice"):
                sliced = hooks.slice_model(ScoreRequest(model, architecture, config, tokenizer=tokenizer))
            pruning[sliced.dimension.value] = sliced.report
            stock = sliced.stock
        elif config.compresses:
            with clock.stage("score"):
                importances = hooks.score_importance(ScoreRequest(model, architecture, config, tokenizer=tokenizer))
            if not importances:
                raise RuntimeError(f"the selected pruners returned no importance for {config.model}")
            if recoverers:  # what the layers were, for recovery that compensates the slicing
                uncompressed = stack.enter_context(UncompressedLayers.temporary())
            with clock.stage("slice"):
                pruning, stock = slice_by_importance(importances, config, model, architecture, hooks, uncompressed)
        if config.compresses:
            require_finite(model, "slice")

        # the last refusals (a pruner's dimensions, slicing) are behind: from here on the run writes
        rundir.claim(directory, config)
        with clock.stage("recover"):
            request = RecoverRequest(model, tokenizer, architecture, config, work_dir=directory / rundir.SCRATCH,
                                     output_dir=directory, uncompressed=uncompressed)
            model, recovery = recover(hooks, recoverers, request)
    stages = _stages(clock, [name for name in clock.seconds if name not in done])
    return model, {"pruning": pruning, "stock": stock,
                   "recovery": [step.model_dump(mode="json") for step in recovery], **stages}


def _stages(clock: Stopwatch, names: list[str]) -> dict[str, dict[str, object]]:
    """The timings and memory of the stages ``names``, as :class:`prunekit.rundir.Resume` keeps them."""
    return {"timings": {name: clock.seconds[name] for name in names},
            "memory": {name: clock.memory[name].model_dump(mode="json") for name in names}}


def params_report(before: int, layers_before: int, units_before: dict[str, int], model: nn.Module,
                  architecture: Architecture) -> output.Params:
    """The report's parameter counts: the whole model and its parts, before and after."""
    layers_after, units_after = parameter_parts(model, architecture)
    return output.Params(before=before, after=count_parameters(model),
                         decoder_layers=output.Count(before=layers_before, after=layers_after),
                         units={name: output.Count(before=held, after=units_after[name])
                                for name, held in units_before.items() if name in units_after})

