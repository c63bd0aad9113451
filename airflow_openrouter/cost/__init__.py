"""Cost control, shared by the chat operator and both bulk engines; no Airflow imports at module level.

* :mod:`.tokens`      -- the estimator's rule: prompt tokens of a request, and its completion bound;
* :mod:`.prices`      -- a model's published prices from ``/models`` (and the batch assumption);
* :mod:`.estimate`    -- a run's estimate as passes of requests, its basis, and the ``max_cost_usd`` check;
* :mod:`.ledger`      -- the per-row usage fields, and the manifest's sums of them;
* :mod:`.attribution` -- the ``user``, ``session_id`` and ``metadata`` that say which task sent a request.

The result cache lives in :mod:`airflow_openrouter.cache`; how the engines use all this, step by step,
in :mod:`airflow_openrouter.batch.budget` and :mod:`airflow_openrouter.batch.cached`.
"""
