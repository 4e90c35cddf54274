"""The built-in evaluators, each its own plugin behind the collect-all ``evaluate`` hook.

- ``perplexity`` (:mod:`.perplexity`): perplexity and mean token cross-entropy on a text;
- ``zeroshot`` (:mod:`.zeroshot`): lm-eval tasks on the in-memory model, only when tasks are given;
- ``latency`` (:mod:`.speed`): prefill and decode throughput, memory.

Each module also exposes its measurement as a plain function (:func:`.perplexity.measure`,
:func:`.zeroshot.score_tasks`, :func:`.speed.measure`) for code that measures a model outside a
run. A search does not call them: it asks each evaluator through the hook, with the settings of
one evaluation batch in its options (``sample`` for ``perplexity`` and ``zeroshot``).
"""
