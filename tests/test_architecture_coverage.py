"""Every causal-LM family the installed transformers maps: sliced exactly, or refused with a reason.

For each family a tiny random-weight model is built from its own config class with the sizes
shrunk (:func:`prunekit.plugins.models.tiny.tiny_model`). Its adapter is the one the run would use (derived from
the model, since no plugin registers one). Every dimension the adapter offers is sliced at 0.5 by
the ``random`` pruner through the run's own slicing path; the result must equal the original with
the removed units zeroed, be a stock checkpoint, and reload with stock ``from_pretrained`` to
identical logits. A dimension it does not offer must come with a reason.

The table in docs/architectures.md is this test's output: ``PRUNEKIT_WRITE_DOCS=1 pytest
tests/test_architecture_coverage.py`` rewrites it, and the test fails while the two differ.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as transformers_logging

from prunekit import pipeline
from prunekit.plugins.surgery import is_int, zero_removed_units
from prunekit.config import RunConfig
from prunekit.errors import UsageError
from prunekit.manager import get_plugins
from prunekit.payloads import Dimension, ScoreRequest
from prunekit.slicing import keep_plan

FAMILIES = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
DOC = Path(__file__).parents[1] / "docs" / "architectures.md"
BEGIN, END = "<!-- coverage table: begin -->", "<!-- coverage table: end -->"
DENSE = "dense"
FAILED = "FAILED"
GOAL = 0.9
"""The share of dense-MLP families whose FFN must slice into a stock checkpoint."""
TOLERANCE = 1e-4  # max logit difference relative to the largest logit, float32
IDS = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))
ATTENTION_KINDS = {"full_attention", "sliding_attention", "chunked_attention", "attention", "global", "local",
                   "sliding_window", "full"}


@dataclass
class Row:
    family: str
    kind: str
    cells: dict[Dimension, str]

    @property
    def covered(self) -> bool:
        return self.cells[Dimension.FFN] == "yes"


RECURRENT = "state-space / recurrent"
UNRUNNABLE = "transformers cannot run or reload it alone"
UNMARKED = {"rwkv": RECURRENT, "xlstm": RECURRENT}
"""Recurrent families whose configs have no field that says so."""


def fields(settings: dict, prefix: str = "") -> dict:
    """Every field of a config dict, nested ones (DBRX's ``ffn_config``) under dotted names."""
    found = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            found.update(fields(value, f"{prefix}{name}."))
        else:
            found[f"{prefix}{name}"] = value
    return found


def kind(family: str, config) -> str:
    """What the family is, read from its config before anything is sliced: the denominator of the
    coverage goal must not depend on what the adapter manages."""
    if family in UNMARKED:
        return UNMARKED[family]
    text = config.get_text_config()
    every = fields({**config.to_dict(), **text.to_dict()})
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if any(("expert" in name or name.rsplit(".", 1)[-1].startswith("moe")) and is_int(value) and value > 1
           for name, value in every.items()):
        return "mixture of experts"
    kinds = set(getattr(text, "layer_types", None) or [])
    words = ("ssm", "mamba", "state_size", "conv_kernel", "linear_attn", "recurrent", "_cycles")
    if kinds - ATTENTION_KINDS or any(word in name for name in every for word in words):
        return RECURRENT
    return DENSE


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def close(expected: torch.Tensor, actual: torch.Tensor) -> bool:
    return bool(((expected - actual).abs().max() <= TOLERANCE * expected.abs().max().clamp_min(1.0)).item())


def check(model, architecture, dimension: Dimension, directory: Path) -> str:
    """Slice a copy at 0.5 along ``dimension`` as a run does; assert exactness and a stock reload."""
    plugins = get_plugins()
    config = RunConfig(model="tiny", plugins=["random"], ratio=0.5,
                       options={"random": {"dimensions": [dimension.value]}})
    sliced = copy.deepcopy(model)
    importances = plugins.hooks(["random"]).score_importance(ScoreRequest(sliced, architecture, config))
    plan = keep_plan(importances, 0.5, architecture, sliced)
    _, stock = pipeline.slice_by_importance(importances, config, sliced, architecture, plugins.hooks(["random"]))
    assert stock, f"{dimension.value}: the slice is not a stock checkpoint"
    if dimension is not Dimension.LAYERS:
        reference = copy.deepcopy(model)
        for layer, keep in zip(architecture.layers(reference), plan):
            zero_removed_units(architecture, layer, dimension, keep[dimension])
        assert close(logits(reference), logits(sliced)), f"{dimension.value}: sliced != zeroed"
    sliced.save_pretrained(directory)
    reloaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    assert close(logits(sliced), logits(reloaded)), f"{dimension.value}: the stock reload computes otherwise"
    return "yes"


def outcome(family: str, directory: Path) -> Row:
    from prunekit.plugins.models.tiny import shrunk_config, tiny_model

    cells = dict.fromkeys((Dimension.FFN, Dimension.HEADS, Dimension.LAYERS), "")
    try:
        family_kind = kind(family, shrunk_config(family))
    except Exception:  # noqa: BLE001 - the model build below reports the failure
        family_kind = "?"
    try:
        model = tiny_model(family)
    except Exception as error:  # noqa: BLE001 - every failure is a row of the table
        return Row(family, family_kind, dict.fromkeys(cells, f"no tiny model: {one_line(error)}"))
    try:  # a family transformers itself cannot run alone, or save and reload, is none to slice into
        model(IDS)
        model.save_pretrained(directory / "dense")
        AutoModelForCausalLM.from_pretrained(directory / "dense")(IDS)
    except Exception as error:  # noqa: BLE001
        return Row(family, UNRUNNABLE if family_kind == DENSE else family_kind,
                   dict.fromkeys(cells, f"unsliced: {one_line(error)}"))
    try:
        architecture = get_plugins().hooks([]).architecture_for(model)
    except UsageError as error:
        return Row(family, family_kind, dict.fromkeys(cells, one_line(error)))
    for dimension in cells:
        if dimension in architecture.dimensions:
            try:
                cells[dimension] = check(model, architecture, dimension, directory / dimension.value)
            except Exception as error:  # noqa: BLE001 - collected, and the test below fails on it
                cells[dimension] = f"{FAILED} {type(error).__name__}: {one_line(error)}"
        else:
            with pytest.raises(UsageError) as refused:
                architecture.require(dimension)
            cells[dimension] = one_line(str(refused.value).split("stock checkpoint: ", 1)[-1])
    return Row(family, family_kind, cells)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()).replace("|", "/")
    return text[:110] + ("..." if len(text) > 110 else "")


def table(rows: list[Row]) -> str:
    dense = [row for row in rows if row.kind == DENSE]
    covered = sum(row.covered for row in dense)
    lines = [
        f"{covered} of {len(dense)} dense-MLP families ({covered / len(dense):.0%}) slice their FFN into a stock "
        f"checkpoint, of the {len(rows)} causal-LM families in transformers {transformers.__version__} "
        f"(generated by `tests/test_architecture_coverage.py`). Not counted: mixture-of-experts, "
        f"state-space / recurrent and encoder-decoder families (read from their configs), and "
        f"{sum(row.kind == UNRUNNABLE for row in rows)} whose unsliced tiny model transformers itself "
        f"cannot run alone or save and reload.",
        "",
        "| family | kind | FFN | heads | layers |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row.cells[d] for d in (Dimension.FFN, Dimension.HEADS, Dimension.LAYERS)]
        if len(set(cells)) == 1 and cells[0] != "yes":
            cells = [cells[0], "", ""]
        lines.append(f"| `{row.family}` | {row.kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[Row]:
    transformers_logging.set_verbosity_error()  # families warn about their own defaults
    directory = tmp_path_factory.mktemp("coverage")
    found = []
    for family in FAMILIES:
        with torch.random.fork_rng(devices=[]):
            found.append(outcome(family, directory / family))
    return found


def test_every_offered_dimension_slices_exactly_and_reloads_stock(rows):
    failed = [f"{row.family} {d.value}: {cell}" for row in rows for d, cell in row.cells.items() if cell.startswith(FAILED)]
    assert not failed, "\n".join(failed)


def test_the_ffn_of_nine_in_ten_dense_families_slices(rows):
    """The message lists the dense families whose FFN does not slice, and why."""
    dense = [row for row in rows if row.kind == DENSE]
    covered = [row for row in dense if row.covered]
    missing = [f"{row.family}: {row.cells[Dimension.FFN]}" for row in dense if not row.covered]
    assert len(covered) >= GOAL * len(dense), "\n".join(missing)


def test_docs_show_the_generated_table(rows):
    """Exactly, for the transformers release the table names; under another release the families
    differ and only the coverage goal above is checked."""
    text = DOC.read_text()
    generated = table(rows)
    if os.environ.get("PRUNEKIT_WRITE_DOCS") == "1":
        text = re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{generated}\n{END}", text, flags=re.S)
        DOC.write_text(text)
    if f"transformers {transformers.__version__} " not in text:
        pytest.skip(f"docs/architectures.md was generated under another transformers release than {transformers.__version__}")
    assert f"{BEGIN}\n{generated}\n{END}" in text
