"""``model/README.md``: a Hugging Face model card for every saved model.

A compressed checkpoint travels without its run directory (uploaded to the Hub, copied to
another machine), and then ``report.json`` no longer sits beside it to say what it is. The card
says it where the Hub and every Hugging Face tool look: a YAML header (``base_model``, tags,
``library_name``, ``pipeline_tag``) that links the model to the one it was compressed from, and a
body with how it was compressed, the report's before and after measurements, and how to load it.

huggingface_hub's :class:`~huggingface_hub.ModelCard` and :class:`~huggingface_hub.ModelCardData`
write the header and check it parses, so no YAML is written by hand here; the body reuses the
report's own rows (:func:`prunekit.metric_rows`), so the card's figures are the report's.
huggingface_hub is imported inside the functions: only writing a card needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from prunekit import files, manager
from prunekit.output import task_stderr
from prunekit.plugins.report import markdown
from prunekit.rendering import metric_rows, parameter_rows

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from prunekit.output import Report

CARD = "README.md"
"""The card's file name inside ``model/``: where the Hub reads a model card from."""
TAGS = ("prunekit", "pruning", "structured-pruning")


def _is_hub_id(name: str, *, owner: bool = False) -> bool:
    """Whether ``name`` is shaped like a Hub id (``owner/name``, or a bare legacy name unless
    ``owner`` is required) rather than a filesystem path."""
    from prunekit.models import HUB_ID

    return bool(HUB_ID.match(name)) and (not owner or "/" in name) and not Path(name).expanduser().exists()


def _declared_base(directory: Path) -> str | None:
    """The Hub id a local checkpoint names as its origin: its config's ``_name_or_path`` where that
    is a Hub id, else the ``base_model`` of its own model card (a prunekit output compressed again)."""
    config = directory / "config.json"
    try:
        name = json.loads(config.read_text()).get("_name_or_path") if config.is_file() else None
    except (OSError, ValueError):
        name = None
    if isinstance(name, str) and _is_hub_id(name, owner=True):
        return name
    if (directory / CARD).is_file():
        from huggingface_hub import ModelCard

        try:
            declared = ModelCard.load(directory / CARD).data.base_model
        except (OSError, ValueError):
            return None
        if isinstance(declared, str) and _is_hub_id(declared, owner=True):
            return declared
    return None


def base_model(model: str) -> str | None:
    """The Hub id of the model ``--model model`` compressed: for a name a plugin provides, the one
    its source names (a built-in real model's; ``None`` for the random-weight ``tiny-*`` models),
    a Hub id as given, what a local directory declares (see :func:`_declared_base`); ``None`` for
    a local directory that names no Hub id."""
    source = manager.get_plugins().model_source(model)
    if source is not None:
        return source.base_model
    path = Path(model).expanduser()
    if path.is_dir():
        return _declared_base(path)
    return model if _is_hub_id(model) else None


def _license(model: str) -> str | None:
    source = manager.get_plugins().model_source(model)
    return source.license if source else None


def _metric_lines(report: Report) -> list[str]:
    before, after = report.metrics["before"], report.metrics["after"]
    rows = metric_rows(before, after)
    if not rows:
        return ["No evaluator measured the model in this run."]
    errors = {"before": task_stderr(before.details), "after": task_stderr(after.details)}

    def error(stage: str, name: str) -> float | None:
        task, _, metric = name.partition(" ")
        return errors[stage].get(task, {}).get(metric)

    lines = ["| metric | before | after | after / before |", "|---|---|---|---|"]
    lines += [f"| {name} | {markdown.with_stderr(b, error('before', name))} | "
              f"{markdown.with_stderr(a, error('after', name))} | {markdown.retention(b, a)} |" for name, b, a in rows]
    if any(errors.values()):
        lines += ["", "Task scores are given ± their standard error where the evaluator reports one (lm-eval does)."]
    zeroshot = markdown.zeroshot_lines(report.retention)
    summary = markdown.summary_lines(report)
    return lines + ([""] + zeroshot[:-1] if zeroshot else []) + ([""] + summary[:-1] if summary else [])


def _settings_lines(report: Report) -> list[str]:
    config = report.config
    measured = report.metrics["before"].details.keys() | report.metrics["after"].details.keys()
    lines = []
    for name, options in config.options.items():
        if options and (name in report.plugins or name in measured):  # the settings of what took part
            lines.append(f"- `{name}` options: {markdown.compact(options)}")
    for dimension, section in report.pruning.items():
        scalars = {k: v for k, v in (section or {}).items() if isinstance(v, (str, int, float, bool))}
        if scalars:
            lines.append(f"- {dimension} pruning: {markdown.compact(scalars)}")
    lines += [line for line in markdown.text_lines(report) if line.startswith("- ")]  # what it calibrated, trained on
    if config.tasks:
        lines.append(f"- zero-shot tasks: {', '.join(config.tasks)}" + (f" ({config.limit} examples each)" if config.limit else ""))
    lines.append(f"- seed {config.seed}, dtype {config.dtype}, device {config.device}")
    return lines


def _load_lines(report: Report, directory: Path) -> list[str]:
    path = str(directory)
    tokenizer = any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    if report.stock:
        code = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'model = AutoModelForCausalLM.from_pretrained("{path}")  # or its Hub id once uploaded']
        intro = "A stock checkpoint: transformers loads it as it is, without `trust_remote_code`."
    else:
        code = ["import prunekit", "from transformers import AutoTokenizer", "",
                f'model = prunekit.load("{path}")  # or a local copy of its Hub repository']
        intro = ("Its layers differ from the stock architecture (per-layer sizes or a plugin's modules), "
                 "so it loads with prunekit (`pip install prunekit`), as a transformers model.")
    if tokenizer:
        code.append(f'tokenizer = AutoTokenizer.from_pretrained("{path}")')
    return [intro, "", "```python", *code, "```"]


def render(report: Report, directory: Path) -> ModelCard:
    """The model card of the checkpoint in ``directory`` that the run of ``report`` saved."""
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model(report.model)
    data = ModelCardData(
        base_model=base,
        license=_license(report.model),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*TAGS, *report.plugins])),
    )
    params = report.params
    source = f"[{base}](https://huggingface.co/{base})" if base else f"`{report.model}`"
    plugins = " → ".join(f"`{name}`" for name in report.plugins) or "none"
    body = [
        f"# {report.model}, compressed by prunekit",
        "",
        f"{source} with structured slicing by prunekit {report.prunekit_version}: "
        f"{params.before:,} → {params.after:,} parameters ({params.reduction:.1%} fewer).",
        "",
        "## How it was compressed",
        "",
        f"- model: `{report.model}`" + (f" (Hub id `{base}`)" if base and base != report.model else ""),
        f"- plugins, in order: {plugins}",
        f"- ratio: {report.ratio:g}" + markdown.per_dimension(report.config.ratios),
        f"- sliced: {', '.join(report.pruning) or 'nothing'}",
        *_settings_lines(report),
        f"- prunekit {report.prunekit_version}; " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
        "",
        "## Parameters",
        "",
        "| parameters | before | after |",
        "|---|---|---|",
        f"| whole model | {params.before:,} | {params.after:,} |",
        *[f"| {name} | {b:,} | {a:,} |" for name, b, a, _ in parameter_rows(params)],
        "",
        "## Evaluation",
        "",
        "Measured by the run on the uncompressed model (before) and on this one (after), the same way:",
        "",
        *_metric_lines(report),
        "",
    ]
    details = report.metrics["after"].details
    if details:
        body += ["How it was measured:", "", *[f"- {name}: {markdown.compact(value)}" for name, value in details.items()], ""]
    body += ["## How to load it", "", *_load_lines(report, directory), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def write_card(report: Report, directory: Path) -> Path:
    """Write ``directory/README.md`` (atomically) for the model the run of ``report`` saved there."""
    target = directory / CARD
    files.write_text(target, str(render(report, directory)))
    return target
