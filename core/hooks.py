"""A typed facade over ``pm.hook`` for one run: one method per hook, only the active plugins.

The pipeline reads as plain calls (``hooks.score_importance(request)``) while pluggy dispatches. Plugins a run did not
select are left out (``subset_hook_caller``); core plugins always take part, and when a run names no evaluator, every
installed one measures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunekit.payloads import SCALAR_METRICS, Metrics

if TYPE_CHECKING:
    import pluggy
    from transformers import PreTrainedModel

    from prunekit.architectures import Architecture
    from prunekit.payloads import (EvalRequest, Importance, ModelSlice, RecoverRequest, Recovery, ReportRequest,
                                   RestoreRequest, ScoreRequest, SliceRequest, StreamedRun, StreamRequest)


class Hooks:
    """The hooks as seen by one run whose plugins are ``active``."""

    def __init__(self, pm: pluggy.PluginManager, active: set[str]) -> None:
        self._pm = pm
        self._inactive = inactive = [plugin for name, plugin in pm.list_name_plugin() if plugin and name not in active]
        self._score = pm.subset_hook_caller("score_importance", inactive)
        self._slice = pm.subset_hook_caller("slice_layer", inactive)
        self._slice_model = pm.subset_hook_caller("slice_model", inactive)
        self._recover = pm.subset_hook_caller("recover", inactive)
        self._render = pm.subset_hook_caller("render_report", inactive)
        evaluators = set(implementers(pm.hook.evaluate))  # none selected: every installed one measures
        self._evaluate = pm.subset_hook_caller("evaluate", inactive) if evaluators & active else pm.hook.evaluate

    def architectures(self) -> list[Architecture]:
        """Every registered architecture adapter (from all installed plugins)."""
        adapters: list[Architecture] = []
        self._pm.hook.register_architectures(register=adapters.append)
        return adapters

    def architecture_for(self, model: PreTrainedModel) -> Architecture:
        """The registered adapter claiming ``model``, else the one an installed plugin derives
        (``derive_architecture``, asked of all of them, as for architectures)."""
        from prunekit import architectures

        return architectures.resolve(model, self.architectures(),
                                     lambda model: self._pm.hook.derive_architecture(model=model))

    def has_pruner(self) -> bool:
        """Whether an active plugin implements ``score_importance`` or ``slice_model``."""
        return bool(self.scorers() or self.model_slicers())

    def scorers(self) -> list[str]:
        """Active plugins that score units for the per-layer path (``score_importance``)."""
        return implementers(self._score)

    def model_slicers(self) -> list[str]:
        """Active plugins that slice the whole model themselves (``slice_model``)."""
        return implementers(self._slice_model)

    def slice_model(self, request: ScoreRequest) -> ModelSlice:
        result = self._slice_model(request=request)
        if result is None:
            raise RuntimeError("the selected whole-model slicer returned nothing")
        return result

    def restore_structure(self, request: RestoreRequest) -> None:
        """Every installed plugin is asked, whether or not a run selected it (as for architectures)."""
        if not self._pm.hook.restore_structure(request=request):
            writer = request.structure.get("plugin")
            raise RuntimeError(f"no installed plugin restores the structure written by {writer!r}")

    def score_importance(self, request: ScoreRequest) -> list[Importance] | None:
        return self._score(request=request)

    def slice_layer(self, request: SliceRequest) -> None:
        if not self._slice(request=request):
            raise RuntimeError(f"no plugin sliced layer {request.layer_index}")

    def compress_streaming(self, request: StreamRequest) -> StreamedRun:
        from prunekit.errors import UsageError

        if (result := self._pm.subset_hook_caller("compress_streaming", self._inactive)(request=request)) is None:
            raise UsageError("--stream needs a plugin that compresses streamed, and the built-in stream is disabled")
        return result

    def recoverers(self, order: list[str]) -> list[str]:
        """Active plugins that implement ``recover``, in the order of ``order`` (the run's ``--plugins``), the order
        in which they recover."""
        names = implementers(self._recover)
        return [name for name in order if name in names]

    def recover(self, name: str, request: RecoverRequest) -> Recovery | None:
        """One recovery step: the plugin ``name`` alone."""
        return self._one("recover", name, request)

    def evaluate(self, request: EvalRequest) -> Metrics:
        """Every active evaluator's metrics, merged; a metric reported twice is an error."""
        return merge_metrics(self._evaluate(request=request))

    def evaluators(self) -> list[str]:
        """The names of the evaluators this run asks, in the order pluggy calls them."""
        return implementers(self._evaluate)[::-1]

    def evaluate_one(self, name: str, request: EvalRequest) -> Metrics | None:
        """One evaluator's metrics alone, so a caller can reuse the others' cached results."""
        return self._one("evaluate", name, request)

    def render_report(self, request: ReportRequest) -> None:
        """Every active renderer writes its files of the finished run."""
        self._render(request=request)

    def _one(self, hook: str, name: str, request: object) -> Any:
        """The answer of plugin ``name`` alone to ``hook`` (``None`` if it gives none)."""
        others = [plugin for other, plugin in self._pm.list_name_plugin() if plugin and other != name]
        results = self._pm.subset_hook_caller(hook, others)(request=request)
        return results[0] if results else None

    def call(self, hook: str, request: object) -> Any:
        """Any hook by name, on the active plugins only: for the hooks that plugins add (``add_hookspecs``), which
        this facade has no method for."""
        return self._pm.subset_hook_caller(hook, self._inactive)(request=request)


def implementers(caller: pluggy.HookCaller) -> list[str]:
    """The plugins implementing the hook that ``caller`` calls (a registry's whole hook, or a run's subset of it), in
    the order they registered: pluggy calls them last first."""
    return [impl.plugin_name for impl in caller.get_hookimpls()]


def merge_metrics(parts: list[Metrics]) -> Metrics:
    merged = Metrics()
    for part in parts:
        for field in SCALAR_METRICS:
            if getattr(part, field) is not None:
                if getattr(merged, field) is not None:
                    raise RuntimeError(f"two evaluators reported {field}")
                setattr(merged, field, getattr(part, field))
        for field in ("tasks", "primary_metric", "latency", "extra", "details"):
            target, source = getattr(merged, field), getattr(part, field)
            clash = target.keys() & source.keys()
            if clash:
                raise RuntimeError(f"two evaluators reported {field} {sorted(clash)}")
            target.update(source)
    return merged
