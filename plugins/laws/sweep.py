"""A sweep: the ordinary pipeline run at every (ratio, recovery size) of a grid, resumably.

Each grid point is one ``prunekit.pipeline.run`` into ``DIR/points/r<ratio>-d<size>/``, so it
reuses whatever the plugins cache across runs (the evaluators' baseline, a pruner's learned
policy) and leaves a full run report. A point whose ``report.json`` exists is finished and never
run again: rerunning the same command after an interruption, or with more ratios or sizes,
runs only what is missing, and a point cut off mid-run resumes from what its run directory kept
(:mod:`prunekit.rundir`). ``DIR/sweep.json`` records the settings that define the experiment,
and a rerun with different ones is refused rather than mixing two experiments in one fit.

The recovery data size D reaches the recovery plugin as one of its options (``--recovery
lora.steps`` sets ``options.lora.steps = D``), so D is in that option's unit; D = 0 runs without
the recovery plugin.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from prunekit.errors import UsageError
from prunekit.plugins.laws.points import RESULTS_FILE, Point, point_from_report, write_points

if TYPE_CHECKING:
    from prunekit.config import RunConfig
    from prunekit.manager import Plugins

SETTINGS_FILE = "sweep.json"
POINT_FIELDS = {"ratio", "output"}


class SweepSettings(BaseModel):
    """What makes two sweeps one experiment: everything but the grid itself."""

    run: dict[str, Any]
    """The run config every point shares (model, plugins, tasks, limit, seed, options, ...)."""
    recovery: str
    """``PLUGIN.KEY``: the recovery plugin and the option that receives D."""
    accuracy_metric: str


def default_directory(config: RunConfig) -> Path:
    """``runs/laws-<model>-<plugins>``: fixed, so rerunning the same command resumes it."""
    model = config.model.strip("/").replace("/", "_")
    return Path("runs") / f"laws-{model}-{'+'.join(config.plugins) or 'none'}"


def parse_recovery(recovery: str) -> tuple[str, str]:
    plugin, dot, key = recovery.partition(".")
    if not (dot and plugin and key):
        raise UsageError(f"invalid --recovery {recovery!r}: expected PLUGIN.KEY, e.g. lora.steps")
    return plugin, key


def point_config(base: RunConfig, ratio: float, size: int, recovery: str, directory: Path) -> RunConfig:
    """The run config of one grid point: the recovery plugin only when D > 0, with D as its option."""
    plugin, key = parse_recovery(recovery)
    plugins = [name for name in base.plugins if name != plugin] + ([plugin] if size > 0 else [])
    options = {name: dict(values) for name, values in base.options.items()}
    if size > 0:
        options.setdefault(plugin, {})[key] = size
    return base.model_copy(update={
        "plugins": plugins, "ratio": ratio, "options": options,
        "output": directory / "points" / f"r{ratio:g}-d{size}",
    })


def check_grid(ratios: list[float], sizes: list[int]) -> None:
    if not ratios:
        raise UsageError("give at least one ratio to sweep")
    if not sizes:
        raise UsageError("give at least one recovery size to sweep (0 for none)")
    for ratio in ratios:
        if not 0 < ratio < 1:
            raise UsageError(f"sweep ratios must be in (0, 1), got {ratio:g}")
    for size in sizes:
        if size < 0:
            raise UsageError(f"recovery sizes must be >= 0, got {size}")


def check_recovery(plugins: Plugins, recovery: str) -> None:
    """The recovery plugin exists, implements ``recover`` and has the option that receives D."""
    plugin, key = parse_recovery(recovery)
    if plugin not in plugins.implementers("recover"):
        raise UsageError(f"--recovery names {plugin!r}, which does not implement recover")
    model = plugins.options_models().get(plugin)
    if model is not None and key not in model.model_fields:
        raise UsageError(
            f"--recovery {recovery}: {plugin} has no option {key!r}; its options: {', '.join(model.model_fields)}"
        )


def check_point(config: RunConfig, plugins: Plugins) -> None:
    """Everything about one point's config that would otherwise fail only when its run starts."""
    hooks = plugins.hooks(config.plugins)
    plugins.resolve_options(config)
    if not hooks.has_pruner():
        raise UsageError(f"none of the plugins {', '.join(config.plugins)} scores importance: a sweep needs a pruner")


def recorded_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run config as ``sweep.json`` records it: read by the current :class:`RunConfig`, so a
    field added to it since shows its default instead of looking like a changed setting."""
    from prunekit.config import RunConfig

    try:
        return RunConfig.model_validate(run).model_dump(mode="json", exclude=POINT_FIELDS)
    except ValidationError:
        return run


def check_settings(directory: Path, settings: SweepSettings) -> None:
    """Refuse to resume a sweep that was started with other settings."""
    file = directory / SETTINGS_FILE
    if not file.is_file():
        return
    previous = SweepSettings.model_validate_json(file.read_text())
    old, new = previous.model_dump(mode="json"), settings.model_dump(mode="json")
    old["run"] = recorded_run(old["run"])
    changed = sorted(
        [f"run.{k}" for k in old["run"].keys() | new["run"].keys() if old["run"].get(k) != new["run"].get(k)]
        + [k for k in ("recovery", "accuracy_metric") if old[k] != new[k]]
    )
    if changed:
        raise UsageError(
            f"{directory} holds a sweep with other settings ({', '.join(changed)}); "
            f"choose another --output or repeat the original settings"
        )


def run_sweep(
    base: RunConfig,
    plugins: Plugins,
    ratios: list[float],
    sizes: list[int],
    *,
    recovery: str = "lora.steps",
    accuracy_metric: str = "primary",
    keep_models: bool = False,
    announce: Callable[[str], None] = lambda message: None,
) -> tuple[Path, list[Point]]:
    """Run every missing grid point and return the sweep directory and all its points.

    Every point's config is validated before the first run, so bad input costs nothing.
    ``model/`` of each point is deleted once its report is written unless ``keep_models``:
    the sweep needs only the reports, and a 135M model is ~270 MB per point."""
    from prunekit import pipeline
    from prunekit.files import write_text

    check_grid(ratios, sizes)
    if base.ratios:
        raise UsageError("a sweep sets every point's ratio itself: remove `ratios` from the config")
    directory = base.output or default_directory(base)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"sweep output is not a directory: {directory}")
    settings = SweepSettings(
        run=base.model_dump(mode="json", exclude=POINT_FIELDS),
        recovery=recovery,
        accuracy_metric=accuracy_metric,
    )
    check_settings(directory, settings)
    grid = [(ratio, size) for size in dict.fromkeys(sizes) for ratio in dict.fromkeys(ratios)]
    if any(size > 0 for size in sizes):
        check_recovery(plugins, recovery)
    configs = [point_config(base, ratio, size, recovery, directory) for ratio, size in grid]
    for config in configs:
        check_point(config, plugins)

    directory.mkdir(parents=True, exist_ok=True)
    write_text(directory / SETTINGS_FILE, settings.model_dump_json(indent=2) + "\n")
    for index, (config, (ratio, size)) in enumerate(zip(configs, grid), start=1):
        where = config.output or directory
        if (where / "report.json").is_file():
            announce(f"[{index}/{len(grid)}] r={ratio:g} D={size}: finished earlier, reused")
            continue
        announce(f"[{index}/{len(grid)}] r={ratio:g} D={size}: running")
        pipeline.run(config, plugins)
        if not keep_models:
            shutil.rmtree(where / "model", ignore_errors=True)
        write_points(collect_points(directory, recovery, accuracy_metric), directory / RESULTS_FILE)
    points = collect_points(directory, recovery, accuracy_metric)
    write_points(points, directory / RESULTS_FILE)
    return directory, points


def recover_size(report: dict[str, Any], recovery: str) -> int:
    """D of a finished run, from what its resolved config gave the recovery plugin (0 without it)."""
    plugin, key = parse_recovery(recovery)
    if plugin not in report["config"]["plugins"]:
        return 0
    return int(report["config"]["options"][plugin][key])


def collect_points(directory: Path, recovery: str, accuracy_metric: str) -> list[Point]:
    """Every finished point of the sweep in ``directory`` (all grids run into it so far)."""
    points = []
    for report_file in sorted((directory / "points").glob("*/report.json")):
        report = json.loads(report_file.read_text())
        size = recover_size(report, recovery)
        points.append(point_from_report(report, size, report_file.parent, accuracy_metric))
    return sorted(points, key=lambda p: (p.recover_size, p.ratio))
