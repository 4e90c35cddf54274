"""The hooks of prunekit: this module is their reference documentation.

A run calls ``plugin_options``, ``model_source``, ``register_architectures`` (then ``derive_architecture`` for a model
no adapter claims), ``evaluate(stage="before")``, ``score_importance`` and ``slice_layer`` per layer (or
``slice_model`` in their place; with ``--stream``, ``compress_streaming`` instead of all of these, and no evaluation),
``recover`` per recovery plugin, ``evaluate(stage="after")`` and ``render_report``,
then the core writes ``report.json``; :func:`prunekit.load` calls ``restore_structure``. ``add_hookspecs`` and
``register_commands`` extend the program itself. docs/hooks.md draws the order with what the run directory holds after
each step, and opens each hook's section with the first paragraph of its docstring here (a test keeps them in step).
Each pipeline hook takes one typed request from :mod:`prunekit.payloads` and returns a typed result, or ``None`` to
let the next plugin answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel
    from transformers import PreTrainedModel

    from prunekit.architectures import Architecture
    from prunekit.payloads import (EvalRequest, Importance, Metrics, ModelSlice, ModelSource, RecoverRequest,
                                   Recovery, ReportRequest, RestoreRequest, ScoreRequest, SliceRequest, StreamedRun,
                                   StreamRequest)

PROJECT = "prunekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "hookimpl", "hookspec", "register_architectures", "plugin_options", "score_importance", "slice_layer",
    "slice_model", "recover", "evaluate", "render_report", "model_source", "restore_structure",
    "derive_architecture", "compress_streaming", "add_hookspecs", "register_commands",
]


@hookspec
def register_architectures(register: Callable[[Architecture], None]) -> None:
    """Register architecture adapters by calling ``register(adapter)`` once per adapter.

    An adapter (:class:`prunekit.architectures.Architecture`) tells the core where a family keeps its decoder layers,
    FFN and attention projections, and which config fields to rewrite after slicing; the one whose ``model_types``
    contains the model's ``config.model_type`` handles it. A model no adapter claims gets one derived from its
    structure (:func:`derive_architecture`), so register one only where the derived adapter is wrong or refuses what
    the family can do. Called for every installed plugin, selected or not, at each adapter lookup (perhaps several per
    process), so only register adapters here: build them once, at import."""


@hookspec
def plugin_options() -> type[BaseModel] | None:
    """Declare the settings this plugin accepts under ``options.<plugin name>`` as a pydantic model.

    The core validates a run's ``options.<name>`` against it before anything runs (a bad value is a one-line error
    naming ``options.<name>.<field>``), fills in the defaults and records the result in the report's resolved config;
    the plugin reads it back with ``Model.model_validate(request.options("<name>"))``. Settings for a plugin that
    declares no model pass unchecked; settings for one not installed are an error."""


@hookspec(firstresult=True)
def score_importance(request: ScoreRequest) -> list[Importance] | None:
    """Score the units of the dimensions this pruner shrinks, one score per unit per layer.

    Return one :class:`~prunekit.payloads.Importance` per dimension pruned (higher score means keep), or ``None`` when
    this plugin is not a pruner. The core keeps the top ``int((1 - ratio) * units)`` units of every layer (or the
    pruner's ``keep_counts``) for :func:`slice_layer`; for ``Dimension.LAYERS`` (one score per layer), the top
    ``int((1 - ratio) * layers)`` layers. Only selected plugins are asked, and one pruner per run: a run selecting two
    is refused (exit code 2, naming both), since pluggy would keep only the first answer. Must not modify the model,
    so that a score can be reused at any ratio."""


@hookspec(firstresult=True)
def slice_layer(request: SliceRequest) -> bool | None:
    """Physically remove the units not in ``request.keep`` from one decoder layer, in place.

    Return ``True`` when the layer was sliced, ``None`` to leave it to the next plugin. The core's structural slicer
    answers last, removing FFN channels and whole attention heads (whole KV groups under grouped-query attention)
    through the layer's adapter; implement this hook only to slice differently (a rotation that spans layers
    implements :func:`slice_model`). Once every layer is sliced, the core rewrites the config from the new module
    shapes."""


@hookspec(firstresult=True)
def slice_model(request: ScoreRequest) -> ModelSlice | None:
    """Compress the whole model in one step, for a method whose scoring and slicing cannot be separated.

    SliceGPT is the example: its rotation of the hidden dimension runs through the embeddings, every layer and the
    head, each layer's computed from the layers already sliced, so its "scores" hold for one ratio only. A selected
    implementation replaces :func:`score_importance`, the keep plan and :func:`slice_layer` for the run (with no
    per-layer pruner or second whole-model slicer beside it). It modifies ``request.model`` in place, layer by layer
    (memory stays near one layer beyond the model), and returns a :class:`~prunekit.payloads.ModelSlice` saying
    whether the result is still a stock architecture; a non-stock one records in its config what
    :func:`restore_structure` needs."""


@hookspec
def recover(request: RecoverRequest) -> Recovery | None:
    """Repair the quality of a sliced model, e.g. by refitting weights or fine-tuning adapters.

    A chain, not a choice: every selected implementation is called once, in the order the run names them (``--plugins
    prunenet,refit,lora`` refits, then fine-tunes the refitted model), on the model the previous step returned. Return
    a :class:`~prunekit.payloads.Recovery` whose model has the same structure and no extra modules (merge adapters
    into the weights, so the checkpoint stays stock), or ``None`` to leave the model as it is.
    ``request.uncompressed`` holds the layers as they were before slicing, for compensation. Resumable checkpoints go
    under ``request.work_dir`` (deleted once the core has kept the recovered model), what stays with the result under
    ``request.output_dir``. The report records each step's report and the perplexity before and after it; a step that
    leaves a NaN or Inf in any weight fails the run."""


@hookspec
def evaluate(request: EvalRequest) -> Metrics | None:
    """Measure a model and return the parts of :class:`~prunekit.payloads.Metrics` this plugin owns.

    Every active evaluator is called (collect-all) for the uncompressed model (``stage="before"``) and the compressed
    one (``"after"``), and must measure both alike so that retention and speedup compare like with like; the core
    merges the results (two evaluators reporting one metric is an error). ``core run`` caches a "before" result by
    model fingerprint and settings, unless it has ``latency``. Between recovery steps it is called with
    ``stage="recovery"`` for each step's perplexity; an evaluator whose measure is slow or does not change with the
    weights returns ``None`` there. A search asks each evaluator alone, for the uncompressed model and each
    configuration it tries, with one evaluation batch's settings in the evaluator's options and the batch's seed as
    the run's. Return ``None`` when there is nothing to measure with the run's settings."""


@hookspec
def render_report(request: ReportRequest) -> None:
    """Write a finished run's report into files of its run directory, beside the saved model.

    Every active renderer is called once per ``core run``, after ``model/`` is saved and before the core writes
    ``report.json``, which marks the run finished: a renderer that raises fails the run (exit 1) and a rerun resumes
    from the kept compressed model, so no directory holds a finished report with a rendering missing. The built-in
    ``report`` plugin, part of every run, writes ``report.md``, the recovery plot and the model card
    (``model/README.md``). Write each file atomically (:mod:`prunekit.files`)."""


@hookspec(firstresult=True)
def model_source(name: str) -> ModelSource | None:
    """Say what model ``--model name`` means, when ``name`` is one of the model names this plugin provides.

    Return a :class:`~prunekit.payloads.ModelSource` (a checkpoint made on first use, or a model built in memory, with
    the Hub id and licence the card names) for a name of this plugin's, ``None`` for any other: simonw/llm's
    ``register_models``, asked by name so that one plugin may provide a family (``tiny-<family>``). Every installed
    plugin is asked, selected or not, before the name is taken for a local directory or a Hub id; the first answer
    counts (last registered first: an entry-point plugin's name shadows a built-in one). Answer from the name alone
    and at once: the registry keeps each answer until a plugin is registered or unregistered, and a run's model card
    reads it too, so slow work (converting, downloading) belongs in ``checkpoint`` or ``build``, called only when the
    model loads."""


@hookspec(firstresult=True)
def restore_structure(request: RestoreRequest) -> bool | None:
    """Reshape a model built from a non-stock checkpoint's config into the structure its weights were saved in.

    ``prunekit.load(DIR)`` builds the model from ``config.json`` and, when the config carries a
    ``prunekit_structure`` entry (plain JSON describing modules the stock family lacks, e.g. SliceGPT's
    shortcut matrices), asks every installed plugin. The one named by ``request.structure["plugin"]`` reshapes
    and adds modules in place and returns ``True``, the others ``None``; the weights then load strictly from
    the safetensors files, with no pickle involved."""


@hookspec(firstresult=True)
def derive_architecture(model: PreTrainedModel) -> Architecture | None:
    """Derive an architecture adapter from ``model`` itself, for a family no registered adapter claims.

    Called when no adapter from :func:`register_architectures` lists the model's ``config.model_type``, for every
    installed plugin, once per model object (the core keeps the answer while the model lives: deriving may run the
    model). Return an :class:`~prunekit.architectures.Architecture`, ``None`` to let the next plugin answer, or raise
    :class:`~prunekit.errors.UsageError` for a model that cannot be sliced at all. The built-in ``discovery`` answers
    last, offering only the dimensions whose slicing is exact on a replay of the model's own layers
    (docs/architectures.md); with no answer, the lookup is a one-line ``UsageError`` naming the model type."""


@hookspec(firstresult=True)
def compress_streaming(request: StreamRequest) -> StreamedRun | None:
    """Compress a model larger than memory: score, slice and write it one decoder layer at a time (``--stream``).

    In place of loading, scoring, slicing and saving, with no evaluation and no recovery. The built-in ``stream``
    answers last: the run's pruner walks layers loaded from the checkpoint one at a time, and ``request.target`` is
    written shard by shard, tensor for tensor what the run in memory saves. Time each stage with ``request.stage``."""


@hookspec(historic=True)
def add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add the hooks this plugin defines for other plugins, with ``pluginmanager.add_hookspecs(module)``.

    Called for every plugin as it is registered (historic, like pytest's ``pytest_addhooks``), before any hook is
    called, so a plugin running a process of its own can let others take part: the built-in ``search`` adds
    ``select_ratio`` for the selector plugins (and the built-in ``trace``, registered first, watches the calls). Mark
    the hookspecs with :data:`hookspec` so that pluggy checks implementations against them as it checks the core's. An
    implementation of a hook another plugin adds is marked ``@hookimpl(optionalhook=True)``: with that plugin
    disabled, the hook does not exist."""


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``core`` command line, with ``cli.command()`` or ``cli.add_typer(app, name=...)``.

    ``cli`` is the ``core`` Typer app; each implementation is called once, when the command line is built, last
    registered first (the built-in ``search`` and ``laws`` add their commands so, as simonw/llm's plugins do).
    Commands that load no model must answer at once: import only Typer and the command's module here, heavy libraries
    inside the command's body. A plugin whose registration raises is recorded as failed (``core plugins list`` shows
    why), whatever it had added is taken back, and the other commands still work."""
