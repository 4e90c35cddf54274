"""Ratio search under a latency budget (``core search``): which pruner, at what ratio per dimension.

- :mod:`.space`: the configurations (pruner × a ratio per dimension it offers) and their shapes;
- :mod:`.budget`: the latency budget and how latency is read from the ``latency`` protocol;
- :mod:`.objective`: per-task retention aggregated by its mean or the α-fair utility;
- :mod:`.quality`: retention estimated from evaluation batches, paired with the uncompressed model;
- :mod:`.evaluation`: candidates of a real model, sliced and measured;
- :mod:`.study`: the Optuna study that records, resumes and shares a search;
- :mod:`.driver`: the loop that asks a ``select_ratio`` plugin and measures what it chose;
- :mod:`.session` and :mod:`.report`: one ``core search`` and what it writes.

The selectors themselves are plugins: ``bandit`` (:mod:`prunekit.plugins.bandit`) and ``optuna``
(:mod:`prunekit.plugins.optuna_search`). See docs/search.md.
"""
