"""The streamer by which ``latency`` times ``generate``, in a module of its own: it subclasses
transformers' ``BaseStreamer``, and :mod:`.speed` must load without transformers, so that listing
plugins stays fast."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from transformers.generation.streamers import BaseStreamer

if TYPE_CHECKING:
    import torch


class TokenClock(BaseStreamer):
    """Records when ``generate`` hands out the prompt and then each new token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass
