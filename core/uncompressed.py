"""The decoder layers as they were before slicing, kept on disk for recovery plugins that need them.

A compensation step such as ``refit`` fits each sliced layer to what the uncompressed layer would have produced, so it
needs the original weights after slicing has freed them. Rather than a second model in memory, each layer goes to its
own safetensors file just before it is sliced, with a skeleton on the ``meta`` device, and
:meth:`UncompressedLayers.layer` rebuilds one layer at a time from the two. The files (the decoder layers' size) live
in a temporary folder under ``$TMPDIR``, deleted when the run leaves it, also on an error.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from prunekit.payloads import Dimension

if TYPE_CHECKING:
    import torch
    from torch import nn


class UncompressedLayers:
    """Snapshots of decoder layers by index, written by :meth:`keep` and read by :meth:`layer`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._skeletons: dict[int, nn.Module] = {}
        self._kept: dict[int, dict[Dimension, torch.Tensor]] = {}

    def keep(self, index: int, layer: nn.Module, kept: dict[Dimension, torch.Tensor]) -> None:
        """Record ``layer`` as layer ``index`` of the uncompressed model just before it is sliced to the units
        ``kept`` (sorted indices, for each dimension that loses units). Buffers are written too, non-persistent ones
        included, so the rebuilt layer runs exactly as the original did."""
        from safetensors.torch import save_file

        tensors = {name: tensor.detach().cpu().contiguous()
                   for name, tensor in chain(layer.named_parameters(), layer.named_buffers())}
        save_file(tensors, self._path(index))
        self._skeletons[index] = copy.deepcopy(layer).to("meta")
        self._kept[index] = {dimension: units.cpu() for dimension, units in kept.items()}

    def kept(self, index: int) -> dict[Dimension, torch.Tensor]:
        """The units layer ``index`` kept, for each dimension it lost units in."""
        return self._kept[index]

    def layer(self, index: int, device: torch.device | str) -> nn.Module:
        """A fresh copy of the uncompressed layer ``index`` on ``device``, in eval mode."""
        from accelerate.utils import set_module_tensor_to_device
        from safetensors.torch import load_file

        if index not in self._skeletons:
            raise KeyError(f"layer {index} was not recorded before slicing")
        layer = copy.deepcopy(self._skeletons[index])
        for name, tensor in load_file(self._path(index)).items():
            set_module_tensor_to_device(layer, name, device, value=tensor)
        return layer.eval().requires_grad_(False)

    @classmethod
    @contextlib.contextmanager
    def temporary(cls) -> Iterator[UncompressedLayers]:
        """An empty record in a temporary folder, deleted with everything in it on leaving."""
        with tempfile.TemporaryDirectory(prefix="prunekit-uncompressed-") as directory:
            yield cls(Path(directory))

    def _path(self, index: int) -> Path:
        return self.directory / f"layer-{index:04d}.safetensors"
