"""``stream``: compress a model larger than memory, one decoder layer at a time (``core run --stream``).

A core plugin: it answers ``compress_streaming`` last, for every run with ``--stream``. The model is never whole in
memory: a skeleton on the ``meta`` device gives its shapes and config, the run's pruner scores layers that load from
the checkpoint as it walks them (:mod:`.layers`), and each layer is sliced and written into the new checkpoint's shards
before the next one loads (:mod:`.checkpoint`). Tensors outside the layers (embeddings, head, norms) are copied a chunk
at a time. docs/streaming.md has the memory it takes and how to evaluate the result.

Loading the plugin needs no torch; :mod:`.run` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit import hookimpl

if TYPE_CHECKING:
    from prunekit.payloads import StreamedRun, StreamRequest


@hookimpl(trylast=True)
def compress_streaming(request: StreamRequest) -> StreamedRun:
    from prunekit.plugins.streaming.run import compress

    return compress(request)
