"""The built-in evaluators, each its own plugin behind the collect-all ``evaluate`` hook.

- ``perplexity`` (:mod:`.perplexity`): perplexity and mean token cross-entropy on a text;
- ``zeroshot`` (:mod:`.zeroshot`): lm-eval tasks on the in-memory model, only when tasks are given;
- ``latency`` (:mod:`.speed`): prefill and decode throughput, memory.

Each module also exposes its measurement as a plain function (:func:`.perplexity.measure`,
:func:`.zeroshot.score_tasks`, :func:`.speed.measure`), so that a search can measure candidate
models without running the pipeline.
"""
