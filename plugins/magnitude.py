"""``magnitude``: keep the FFN channels whose input-projection rows have the largest L2 norm.

The weight-only baseline PruneNet is compared against: like PruneNet it needs no data and reads
the same matrix (gate_proj for Llama-style models, fc1 for OPT/phi, GPT-2's c_fc), but it scores
each channel on its own, with no learning.
"""

from __future__ import annotations

from prunekit import hookimpl
from prunekit.payloads import Dimension, Importance, ScoreRequest


@hookimpl
def score_importance(request: ScoreRequest) -> list[Importance]:
    architecture = request.architecture
    scores = [
        architecture.ffn_input_weight(layer).detach().float().norm(dim=1).cpu()
        for layer in architecture.layers(request.model)
    ]
    return [Importance(Dimension.FFN, scores, report={"criterion": "L2 norm of FFN input-projection rows"})]
