"""What recovery keeps on disk so that an interrupted run resumes instead of starting over.

Training state lives under the run's ``checkpoints/<plugin>/``:

- ``manifest.json``: the identity of the training (fingerprint of the sliced model and every
  setting that shapes the result). A rerun into the same directory resumes only if it matches;
  otherwise the checkpoints belong to another training and the run stops with an error rather
  than mix the two.
- ``trainer/checkpoint-N/``: ``Trainer``'s checkpoints (adapter or weights, optimizer, scheduler, RNG and
  trainer state), one per evaluation. ``Trainer`` writes ``trainer_state.json`` last, so a
  checkpoint without it was cut off mid-write and is discarded.

They stay after training: the pipeline removes ``checkpoints/`` once it has kept the recovered model
(:mod:`prunekit.rundir`), so that a kill between the two loses no training.

With ``lora``'s ``save_adapter`` the finished adapter goes to the run's ``adapter/`` in peft's format with
``recovery.json`` (the report), written under a temporary name and renamed into place; a rerun
that finds it merges it without training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from prunekit import files
from prunekit.errors import UsageError

if TYPE_CHECKING:
    from peft import PeftModel

REPORT_FILE = "recovery.json"


def _write_json(path: Path, content: dict[str, Any]) -> None:
    files.write_json(path, content, indent=2, sort_keys=True)


class Store:
    """The recovery files of one plugin (``name``) in one run directory, for one training identity; ``adapter_dir``
    where a finished adapter is kept, for a plugin that keeps one (``lora``; :meth:`finished`, :meth:`finish`)."""

    def __init__(self, work_dir: Path, name: str, identity: dict[str, Any], adapter_dir: Path | None = None) -> None:
        self.root = work_dir / name
        self.trainer_dir = self.root / "trainer"
        self.adapter_dir = adapter_dir
        self.identity = json.loads(json.dumps(identity))  # as it reads back from JSON

    def claim(self) -> None:
        """Record the identity, or check it against the one already recorded there."""
        manifest = self.root / "manifest.json"
        if manifest.is_file():
            recorded = json.loads(manifest.read_text()).get("identity", {})
            keys = recorded.keys() | self.identity.keys()
            differ = sorted(key for key in keys if recorded.get(key) != self.identity.get(key))
            if differ:
                raise UsageError(
                    f"{self.root} holds checkpoints of another training (different {', '.join(differ)}); "
                    f"rerun with the same settings to resume, or choose another --output"
                )
            return
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(manifest, {"identity": self.identity})

    def last_checkpoint(self) -> Path | None:
        """The newest complete ``Trainer`` checkpoint; incomplete ones are removed."""
        if not self.trainer_dir.is_dir():
            return None
        complete = []
        for path in map(Path, sort_checkpoints(str(self.trainer_dir), PREFIX_CHECKPOINT_DIR)):
            if (path / TRAINER_STATE_NAME).is_file():
                complete.append(path)
            else:
                shutil.rmtree(path)
        return complete[-1] if complete else None

    def finished(self) -> dict[str, Any] | None:
        """The report of a finished training whose adapter is in :attr:`adapter_dir` (given), if any."""
        report = self.adapter_dir / REPORT_FILE
        return json.loads(report.read_text()) if report.is_file() else None

    def finish(self, model: PeftModel, report: dict[str, Any], keep_adapter: bool) -> None:
        """Keep the trained adapter, if asked: the trainer checkpoints stay until the pipeline has
        kept the merged model."""
        if keep_adapter:
            with files.staged(self.adapter_dir) as staging:
                model.save_pretrained(staging)
                _write_json(staging / REPORT_FILE, report)
