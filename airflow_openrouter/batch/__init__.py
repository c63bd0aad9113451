"""Internals of bulk generation (``OpenRouterBatchOperator``, ``OpenRouterEmbeddingOperator``, their
trigger and the sensor).

One module, one job; read them in the order a run uses them:

* :mod:`.vocabulary` -- the statuses of batches, events, rows and manifests, defined once;
* :mod:`.options`    -- :class:`~.options.JobOptions`, the one frozen object both engines take;
* :mod:`.endpoints`  -- the :class:`~.endpoints.Endpoint` protocol: what differs between chat
  completions and embeddings for the engines (request grouping, rows, the writer), and the chat one;
* :mod:`.items`      -- items in (a list or a JSONL file), their ids, one rendered chat request per item;
* :mod:`.spool`      -- the rendered requests in a local file, their fingerprint, and their split into
  batches (<= 5,000 requests, <= 200 MB);
* :mod:`.state`      -- who this task run is, where its files go, and the record of submitted batches
  that lets a retry re-attach instead of paying twice;
* :mod:`.budget`     -- before anything is sent (both engines): the result cache's answers, the cost
  estimate and the ``max_cost_usd`` check (the logic lives in :mod:`airflow_openrouter.cost`);
* :mod:`.cached`     -- the result cache in a bulk run: item keys, cached rows, new answers added
  (the storage lives in :mod:`airflow_openrouter.cache`);
* :mod:`.submit`     -- submit what the record still has to do; prove whose a lost POST's batch is;
* :mod:`.batch_api`  -- the ``batch`` engine: start (re-attach, submit), deadline, fetch;
* :mod:`.watch`      -- the poll decision shared by the trigger, the operator and the sensor, and the
  one event it produces; :mod:`.poll` -- the one poll round they all run; :mod:`.poller` -- the poll
  loop the triggers of one connection share in the triggerer;
* :mod:`.results`    -- result rows (shared by both engines), the streaming JSONL writer, the manifest;
  :mod:`.ids` -- the per-item bookkeeping kept for the whole run, in compact form; :mod:`.progress`
  -- the engines' progress and summary lines;
* :mod:`.failures`   -- why items failed (cause, transient), and the verdict on a run;
* :mod:`.recovery`   -- row recovery after a pass (both engines): which rows are sent again or repaired,
  on which model, ``attempts``/``history``, the pass from the worker, the manifest's ``recovery``;
  :mod:`.followup`, the batch engine's follow-up batches, recorded before they are submitted;
* :mod:`.concurrent` -- the ``concurrent`` engine's send loop: requests from the worker, with rate
  limits; :mod:`.concurrent_run` -- that engine for one task run, with its :mod:`.checkpoint` of rows
  saved as they arrive;
* :mod:`.embeddings` -- the embeddings endpoint (text per item, grouped requests, vector rows), and
  :mod:`.vectors`, its Parquet and JSONL writers;
* :mod:`.shards`     -- for users: split a JSONL input into shards for a mapped task, merge the shards'
  manifests.

``vocabulary`` and ``failures`` import none of the others; only the two engines import many of them.
Nothing here is imported when a DAG file is parsed: the operator imports these modules in ``execute``.
"""
