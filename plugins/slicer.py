"""``slicer``: the structural slicer, a core plugin that takes part in every run.

It answers ``slice_layer`` last (``trylast``), so a plugin that slices a layer its own way answers first,
and every layer any other plugin leaves is sliced through its architecture adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit import hookimpl

if TYPE_CHECKING:
    from prunekit.payloads import SliceRequest


@hookimpl(trylast=True)
def slice_layer(request: SliceRequest) -> bool:
    """Remove the units not kept, dimension by dimension, through the layer's adapter."""
    layer = request.architecture.layers(request.model)[request.layer_index]
    for dimension, keep in request.keep.items():
        if len(keep) < request.architecture.units(layer, dimension):
            request.architecture.slice(layer, dimension, keep)
    return True
