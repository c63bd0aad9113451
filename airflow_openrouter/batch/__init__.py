"""Internals of bulk generation (``OpenRouterBatchOperator``, its trigger and its sensor).

One module, one job; read them in the order a run uses them:

* :mod:`.items`      -- items in (a list or a JSONL file), one rendered chat request per item out;
* :mod:`.submit`     -- spool the requests, split them into batches (<= 5,000 requests, <= 200 MB),
  submit the batches not submitted yet;
* :mod:`.state`      -- who this task run is, where its files go, and the record of submitted batches
  that lets a retry re-attach instead of paying twice;
* :mod:`.events`     -- the poll decision shared by the trigger, the operator's own wait and the
  sensor's poke, and the one event it produces;
* :mod:`.results`    -- result rows (shared by both engines), the streaming JSONL writer, the manifest;
* :mod:`.concurrent` -- the other engine: chat completions from the worker, with rate limits.

Nothing here is imported when a DAG file is parsed: the operator imports these modules in ``execute``.
"""
