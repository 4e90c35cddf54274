"""Resident memory of this process: now, and the peak since a reset, per pipeline stage.

Linux keeps the peak (``VmHWM``) and lets a process reset it (``5`` to ``/proc/self/clear_refs``): a stage's exact
peak without a sampling thread. Elsewhere the peak is the lifetime maximum (``ru_maxrss``), still an upper bound.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), flags=re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def lifetime_peak_mb() -> float:
    """The process's peak resident memory since it started (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float | None:
    return _status_mb("VmRSS")


def reset_peak() -> None:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_mb() -> float:
    """The peak since the last :func:`reset_peak` where the kernel supports it, else the lifetime peak."""
    return _status_mb("VmHWM") or lifetime_peak_mb()
