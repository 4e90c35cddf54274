"""prunekit: structured slicing of large language models, every step a plugin.

Plugin authors need only :data:`hookimpl` from here; everything else a plugin touches arrives
in the typed payloads of :mod:`prunekit.payloads`. Users call :func:`run` (a run from Python,
:mod:`prunekit.api`) and :func:`load` (a checkpoint prunekit wrote, :mod:`prunekit.loading`).
"""

from prunekit.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "load", "run"]


def __getattr__(name: str):
    """``prunekit.load`` and ``prunekit.run`` import torch and transformers only when used, so
    ``core --version`` stays fast."""
    if name == "load":
        from prunekit.loading import load

        return load
    if name == "run":
        from prunekit.api import run

        return run
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
