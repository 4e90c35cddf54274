"""The hooks of prunekit: this module is their reference documentation.

One run calls them in this order::

    plugin_options              (once per run: each plugin's settings model validates options.<name>)
    model_source                first result, every installed plugin: what --model names (the card reuses it)
    register_architectures      (when the core looks up the loaded model's adapter: every installed plugin)
    derive_architecture         (then, once per model no adapter claims: every installed plugin, first result)
    evaluate(stage="before")    collect-all: every active evaluator adds metrics
    score_importance            first result: the active pruner decides
    slice_layer  x layers       first result: the core's structural slicer unless a plugin takes over
      (or slice_model           first result: a whole-model slicer replaces the two steps above)
    recover  x recovery plugins in the order the run names them, each on the previous one's model
    evaluate(stage="after")
    render_report               collect-all: the active renderers write report.md, the model card...
                                (then the core writes report.json, which marks the run finished)
    restore_structure           first result; called by prunekit.load for non-stock checkpoints

Two more hooks make the program itself extensible::

    add_hookspecs               historic: each plugin, as it is registered, may add hooks of its own
    register_commands           once, when the command line is built: each plugin adds its commands

``core search`` and ``core laws`` are built-in plugins of that kind; the search brings a hook of
its own, ``select_ratio``, which the selector plugins implement (docs/hooks.md).

Each pipeline hook takes one typed request from :mod:`prunekit.payloads` and returns a typed result,
or ``None`` to let the next plugin answer. ``docs/hooks.md`` carries one heading per hook with its
exact signature, opening with the first paragraph of its docstring here; a test keeps the two in
step. ``docs/api.md`` lists the public API, with a table of every payload's fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel
    from transformers import PreTrainedModel

    from prunekit.architectures import Architecture
    from prunekit.payloads import (
        EvalRequest,
        Importance,
        Metrics,
        ModelSlice,
        ModelSource,
        RecoverRequest,
        Recovery,
        ReportRequest,
        RestoreRequest,
        ScoreRequest,
        SliceRequest,
    )

PROJECT = "prunekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "hookimpl",
    "hookspec",
    "register_architectures",
    "plugin_options",
    "score_importance",
    "slice_layer",
    "slice_model",
    "recover",
    "evaluate",
    "render_report",
    "model_source",
    "restore_structure",
    "derive_architecture",
    "add_hookspecs",
    "register_commands",
]


@hookspec
def register_architectures(register: Callable[[Architecture], None]) -> None:
    """Register architecture adapters by calling ``register(adapter)`` once per adapter.

    An adapter (:class:`prunekit.architectures.Architecture`) tells the core where a model family
    keeps its decoder layers, FFN and attention projections, and which config fields to rewrite
    after slicing. The adapter whose ``model_types`` contains the loaded model's
    ``config.model_type`` handles it. A model no adapter claims gets one derived from its own
    structure (:func:`derive_architecture`, which the built-in ``discovery`` plugin answers), so
    register one only where the derived adapter is wrong or refuses something the family can do.
    Called for every installed plugin, whether or not a run selected it, each time the core looks
    up a model's adapter (a process may do so more than once), so only register adapters here:
    build them once, at import.
    """


@hookspec
def plugin_options() -> type[BaseModel] | None:
    """Declare the settings this plugin accepts under ``options.<plugin name>`` as a pydantic model.

    The core validates a run's ``options.<name>`` against the model before anything runs (a bad
    value is a one-line error naming ``options.<name>.<field>``), fills in the defaults, and
    records the result in the report's resolved config. The plugin reads its settings back with
    ``Model.model_validate(request.options("<name>"))``. Settings for a plugin that declares no
    model are passed through unchecked; settings for a plugin that is not installed are an error.
    """


@hookspec(firstresult=True)
def score_importance(request: ScoreRequest) -> list[Importance] | None:
    """Score the units of the dimensions this pruner shrinks, one score per unit per layer.

    Return one :class:`~prunekit.payloads.Importance` per dimension pruned (higher score means
    keep), or ``None`` when this plugin is not a pruner. The core keeps the top
    ``int((1 - ratio) * units)`` units of every layer (or the pruner's own ``keep_counts``) and
    hands them to :func:`slice_layer`; for ``Dimension.LAYERS`` (one score per layer) it keeps the
    top ``int((1 - ratio) * layers)`` whole layers and drops the rest. Only plugins selected for
    the run are asked, and one pruner per run: a run selecting two plugins that implement this hook
    is refused with exit code 2, naming both, since pluggy would keep the first answer and drop the
    others. Must not modify the model: scoring and slicing are
    separate so that a score can be reused at any ratio. Options come from ``request.options(<plugin name>)``.
    """


@hookspec(firstresult=True)
def slice_layer(request: SliceRequest) -> bool | None:
    """Physically remove the units not in ``request.keep`` from one decoder layer, in place.

    Return ``True`` when the layer was sliced, ``None`` to leave it to the next plugin. The core's
    own structural slicer answers last: it removes FFN channels and whole attention heads (whole
    KV groups under grouped-query attention) through the layer's architecture adapter. A plugin
    implements this hook only to slice differently (a rotation that spans layers implements
    :func:`slice_model` instead). After every layer is sliced the core rewrites the model config
    from the new module shapes.
    """


@hookspec(firstresult=True)
def slice_model(request: ScoreRequest) -> ModelSlice | None:
    """Compress the whole model in one step, for a method whose scoring and slicing cannot be separated.

    SliceGPT is the example: it rotates the hidden dimension, which runs through the embeddings,
    every layer and the head, and each layer's rotation is computed from the signal of the layers
    already sliced, so its "scores" hold for one ratio only and cannot be reused at another. A
    selected plugin that implements this hook takes the place of :func:`score_importance`, the
    keep plan and :func:`slice_layer` for the run: it modifies ``request.model`` in place (layer by
    layer, so memory stays near one layer beyond the model) and returns a
    :class:`~prunekit.payloads.ModelSlice` that says whether the result is still a stock
    architecture. A non-stock result records in its config what :func:`restore_structure` needs.
    It cannot share a run with a per-layer pruner, nor with a second whole-model slicer.
    """


@hookspec
def recover(request: RecoverRequest) -> Recovery | None:
    """Repair the quality of a sliced model, e.g. by refitting weights or fine-tuning adapters.

    Recovery is a chain, not a choice: every selected plugin that implements this hook is called
    once, in the order the run names them (``--plugins prunenet,refit,lora`` refits, then
    fine-tunes the refitted model), and ``request.model`` is the model the previous step returned.
    Return a :class:`~prunekit.payloads.Recovery` whose model has the same structure and no extra
    modules (merge adapters into the weights), so the saved checkpoint stays stock; return
    ``None`` to leave the model as it is. The report records each step's own report and the
    model's perplexity before and after it. ``request.uncompressed`` gives the layers as they
    were before slicing, for compensation. Write resumable checkpoints under ``request.work_dir``
    (the core deletes it once it has kept the recovered model) and what stays with the result
    under ``request.output_dir``. A step that leaves a NaN or Inf in any weight fails the run.
    """


@hookspec
def evaluate(request: EvalRequest) -> Metrics | None:
    """Measure a model and return the parts of :class:`~prunekit.payloads.Metrics` this plugin owns.

    Every active evaluator is called (collect-all) for the uncompressed model
    (``stage="before"``) and for the compressed one (``stage="after"``); the core merges the
    results, and two evaluators reporting the same metric is an error. ``core run`` caches an
    evaluator's ``"before"`` result by model fingerprint and settings, except results with
    ``latency``, which are measured in every run. An evaluator must measure
    both stages the same way so that the report's retention and speedup compare like with like.
    Between recovery steps it is called with ``stage="recovery"`` for the perplexity each step
    reports; an evaluator whose measure is slow or does not change with the weights returns
    ``None`` there. A search asks each evaluator on its own, for the uncompressed model
    (``stage="before"``) and each configuration it tries (``"after"``), with the settings of one
    evaluation batch in the evaluator's options and the batch's seed as the run's.
    Return ``None`` when there is nothing to measure with the run's settings.
    """


@hookspec
def render_report(request: ReportRequest) -> None:
    """Write a finished run's report into files of its run directory, beside the saved model.

    Every active renderer is called once per ``core run``, after ``model/`` is saved and before
    the core writes ``report.json``, which marks the run finished: a renderer that raises fails
    the run (exit 1) and a rerun of the same command resumes from the kept compressed model, so
    a directory never holds a finished report with a missing rendering. The built-in ``report``
    plugin, which takes part in every run, writes ``report.md``, the recovery plot and the saved
    model's card (``model/README.md``). Write each file atomically (:mod:`prunekit.files`).
    """


@hookspec(firstresult=True)
def model_source(name: str) -> ModelSource | None:
    """Say what model ``--model name`` means, when ``name`` is one of the model names this plugin provides.

    Return a :class:`~prunekit.payloads.ModelSource` (a checkpoint directory made on first use,
    or a model built in memory, with the Hub id and licence a compressed model's card names) for
    a name of this plugin's, ``None`` for any other: the way simonw/llm's ``register_models`` adds
    model names, asked by name so that a plugin may provide a whole family of them
    (``tiny-<family>``). Every installed plugin is asked, whether or not a run selected it, before
    the name is taken for a local directory or a Hub id; the first answer counts, in pluggy's order
    (the last registered first, so an entry-point plugin's name shadows a built-in one). The
    built-in ``models`` plugin provides ``smollm2-135m``, ``gemma3-270m`` and ``tiny-<family>``.
    Answer from the name alone and at once: the registry keeps each name's answer until a plugin
    is registered or unregistered, and the model card of a run reads it too, so slow work
    (converting, downloading) belongs in ``checkpoint`` or ``build``, called only when the model
    loads.
    """


@hookspec(firstresult=True)
def restore_structure(request: RestoreRequest) -> bool | None:
    """Reshape a model built from a non-stock checkpoint's config into the structure its weights were saved in.

    ``prunekit.load(DIR)`` builds the model from ``config.json`` and, when the config carries a
    ``prunekit_structure`` entry (modules the stock family lacks, e.g. SliceGPT's shortcut
    matrices), asks every installed plugin to restore it. The plugin named by
    ``request.structure["plugin"]`` reshapes and adds modules in place and returns ``True``; the
    weights are then loaded from the safetensors files, strictly. Others return ``None``. No
    pickle is involved: the structure is plain JSON in the config.
    """


@hookspec(firstresult=True)
def derive_architecture(model: PreTrainedModel) -> Architecture | None:
    """Derive an architecture adapter from ``model`` itself, for a family no registered adapter claims.

    Called when the core looks up the adapter of a model whose ``config.model_type`` is in no
    ``model_types`` of the adapters from :func:`register_architectures`, once per model object (the
    core keeps the answer for as long as the model lives: deriving may run the model), and for
    every installed plugin, whether or not a run selected it. Return an
    :class:`~prunekit.architectures.Architecture` for ``model``, ``None`` to let the next plugin
    answer, or raise :class:`~prunekit.errors.UsageError` for a model that cannot be sliced at all.
    The built-in core plugin ``discovery`` answers last: it places the decoder layers, the
    attention and the FFN from the module structure and the config, and offers only the dimensions
    whose slicing is exact on a replay of the model's own layers (docs/architectures.md). When no
    plugin answers, the lookup fails with a one-line :class:`~prunekit.errors.UsageError` naming
    the model type.
    """


@hookspec(historic=True)
def add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add the hooks this plugin defines for other plugins, with ``pluginmanager.add_hookspecs(module)``.

    Called once for every plugin as it is registered (a historic hook, like pytest's
    ``pytest_addhooks``), before any hook is called, so a plugin that runs a process of its own
    can let other plugins take part in it: the built-in ``search`` plugin adds ``select_ratio``,
    which the selector plugins implement. Mark the hookspecs with :data:`hookspec` (the project's marker), so that pluggy checks
    the implementations against them as it checks the core's. A plugin implementing a hook that
    another plugin adds should mark its implementation ``@hookimpl(optionalhook=True)``: with that
    plugin disabled, the hook does not exist.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``core`` command line, with ``cli.command()`` or ``cli.add_typer(app, name=...)``.

    ``cli`` is the ``core`` Typer app; each plugin's implementation is called once, when the command
    line is built, in pluggy's order (the last registered first). ``core search``
    and ``core laws`` come from the built-in plugins ``search`` and ``laws`` this way, as
    simonw/llm's plugins add theirs. Commands that load no model must answer at once, so import
    only the command's own module and Typer here, and the heavy libraries inside the command's
    body. A plugin whose registration raises is recorded as failed (``core plugins list`` shows
    why), whatever it had added is taken back, and the other commands still work.
    """
