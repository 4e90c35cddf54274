"""Peak memory of compressing a model in memory and streamed (``--stream``), against the model's size.

Each configuration is one fresh ``core run`` process (magnitude, PruneNet or activation at ratio 0.3) with the evaluators
disabled, so that what is measured is the compression itself: the report's per-stage peaks (``memory.<stage>``,
exact per stage from the kernel's high-water mark), taken above the process's memory at the start of loading, which
holds the interpreter, the libraries and (streamed) the tokenizer. PruneNet trains its policy in every run (no
cache), so its training memory is in the figure. Runs are sequential; run nothing else meanwhile.

    .venv/bin/python bench/memory.py            # both built-in models; writes bench/results/memory.json

The table's last columns extrapolate to Llama-2-7B and -70B shapes: in memory, the measured bytes per parameter
times the parameters; streamed, the mechanism's terms (docs/streaming.md): the largest decoder layer in float32 twice
(loaded, then sliced), a fixed overhead (:data:`OVERHEAD_MB`), for PruneNet the 16-bit copies of every layer's FFN
input matrix, for activation the float32 embeddings and head and the calibration activations. Both add the process's
memory at the start of loading, as measured on each model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_JSON = Path(__file__).parent / "results" / "memory.json"
MODELS = ("smollm2-135m", "gemma3-270m")
PLUGINS = ("magnitude", "prunenet", "activation")
EVALUATORS = "perplexity,zeroshot,latency,generation"
COMPRESSION = ("load", "score", "slice", "save")
MB = 2**20
OVERHEAD_MB = 48
"""What the streamed stages hold beyond the layers and PruneNet's matrices, as measured on the built-in models: code
the stages import (PruneNet's scoring brings scipy, 24 MB), what deriving the adapter leaves (about 20 MB), the copy
buffers (4 MB chunks, cast)."""
LLAMA2 = {  # hidden, FFN width, layers, KV heads' width, vocabulary: the published configs
    "7B": dict(hidden=4096, ffn=11008, layers=32, kv=4096, vocab=32000),
    "70B": dict(hidden=8192, ffn=28672, layers=80, kv=1024, vocab=32000),
}


CALIBRATION = 32 * 512
"""Calibration tokens on the CPU (``activation``'s defaults there: 32 samples of 512 tokens)."""


def llama_shape(hidden: int, ffn: int, layers: int, kv: int, vocab: int) -> dict[str, int]:
    layer = 3 * hidden * ffn + 2 * hidden * hidden + 2 * hidden * kv + 2 * hidden
    return {"params": layers * layer + 2 * vocab * hidden + hidden, "layer": layer, "ffn_input": layers * hidden * ffn,
            "outside": 2 * vocab * hidden + hidden, "hidden": hidden}


def run(model: str, plugins: str, stream: bool, directory: Path) -> dict:
    output = directory / f"{model}-{plugins}-{'stream' if stream else 'memory'}"
    command = [sys.executable, "-m", "prunekit", "run", "--model", model, "--plugins", plugins, "--ratio", "0.3",
               "--output", str(output), "--json", "-o", "prunenet.cache=false", *(["--stream"] * stream)]
    env = {**os.environ, "PRUNEKIT_DISABLE_PLUGINS": EVALUATORS, "PRUNEKIT_NO_PROGRESS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    start = report["memory"]["load"]["start_mb"]
    stages = {name: round(report["memory"][name]["peak_mb"] - start, 1) for name in COMPRESSION}
    return {"model": model, "plugins": plugins, "stream": stream, "params": report["params"]["before"],
            "start_mb": start, "above_start_mb": stages, "peak_above_start_mb": max(stages.values()),
            "peak_rss_mb": report["peak_rss_mb"], "seconds": round(sum(report["timings"].values()), 1)}


def layer_shape(model: str) -> dict[str, int]:
    """The largest decoder layer's and the FFN input matrices' parameters, from the model's config."""
    from transformers import AutoConfig

    from prunekit.plugins.streaming.run import checkpoint_dir

    config = AutoConfig.from_pretrained(checkpoint_dir(model)).get_text_config()
    kv = config.num_key_value_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    heads = config.num_attention_heads * kv // config.num_key_value_heads
    layer = 3 * config.hidden_size * config.intermediate_size + 2 * config.hidden_size * (heads + kv)
    heads_out = 1 if config.tie_word_embeddings else 2
    return {"layer": layer, "ffn_input": config.num_hidden_layers * config.hidden_size * config.intermediate_size,
            "outside": heads_out * config.vocab_size * config.hidden_size + config.hidden_size,
            "hidden": config.hidden_size}


def streamed_estimate_mb(shape: dict[str, int], plugins: str) -> float:
    """Twice the largest layer in float32 and the overhead; PruneNet's 16-bit training matrices; a calibration
    pruner's float32 embeddings (and head) and its activations, a layer's input and output."""
    extra = {"prunenet": 2 * shape["ffn_input"],
             "activation": 4 * shape["outside"] + 2 * 4 * CALIBRATION * shape["hidden"]}.get(plugins, 0)
    return (2 * 4 * shape["layer"] + extra) / MB + OVERHEAD_MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for model in args.models:
            shape = layer_shape(model)
            for plugins in PLUGINS:
                for stream in (False, True):
                    row = run(model, plugins, stream, Path(directory))
                    row["float32_mb"] = round(row["params"] * 4 / MB, 1)
                    row["share_of_float32"] = round(row["peak_above_start_mb"] / row["float32_mb"], 3)
                    if stream:
                        row["estimate_mb"] = round(streamed_estimate_mb(shape, plugins), 1)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    extrapolated = {}
    for row in rows:
        name = f"{row['model']} {row['plugins']} {'streamed' if row['stream'] else 'in memory'}"
        if row["stream"]:
            extrapolated[name] = {size: round(row["start_mb"] + streamed_estimate_mb(llama_shape(**config), row["plugins"]))
                                  for size, config in LLAMA2.items()}
        else:
            per_param = row["peak_above_start_mb"] * MB / row["params"]
            row["bytes_per_param"] = round(per_param, 2)
            extrapolated[name] = {size: round(row["start_mb"] + per_param * llama_shape(**config)["params"] / MB)
                                  for size, config in LLAMA2.items()}
    header = ("model", "pruner", "mode", "params", "fp32 MB", "start MB", "load", "score", "slice", "save",
              "peak above start", "share of fp32", "7B MB", "70B MB")
    print(" | ".join(header))
    for row in rows:
        name = f"{row['model']} {row['plugins']} {'streamed' if row['stream'] else 'in memory'}"
        stages = row["above_start_mb"]
        print(" | ".join(str(cell) for cell in (
            row["model"], row["plugins"], "streamed" if row["stream"] else "in memory", f"{row['params']:,}",
            row["float32_mb"], row["start_mb"], *(stages[name_] for name_ in COMPRESSION),
            row["peak_above_start_mb"], row["share_of_float32"], *extrapolated[name].values())))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "rows": rows, "extrapolated_peak_rss_mb": extrapolated,
        "llama2": {size: llama_shape(**config) for size, config in LLAMA2.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
