"""Batch store and lifecycle.

A batch's status is a pure function of the emulator clock: ``validating`` for ``durations[0]``
seconds, ``in_progress`` for ``durations[1]`` (``request_counts`` grow linearly), ``finalizing`` for
``durations[2]``, then ``completed`` -- or the outcome a ``BatchPlan`` asked for: ``failed`` right
after validating (also when a request body was invalid), ``expired`` after in_progress (half the
items processed), ``cancelling`` during finalizing then ``cancelled`` (there is no cancel endpoint, so
``cancelling`` is reachable only through that fault). A batch still unfinished at its ``expires_at``
(``created_at`` plus its provider's window, see ``_catalogue.BATCH_EXPIRY_HOURS``) is ``expired``.
Nothing runs in the background; every read recomputes the state, and a batch is billed (at the batch
price) the first time it is observed completed.

Result rows are never stored: each page regenerates its rows with the same deterministic generators
as synchronous chat and embeddings, so a completed batch of 20,000 items costs the memory of its inputs.
A row's body is the sync answer of its endpoint (a ``ChatResult``, or an embeddings list) priced at the
batch price, and the batch's ``usage.cost`` is exactly its tokens x the model's prices x 0.5.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import math
import random
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._account import Account
from ._batch_submit import Submission
from ._catalogue import BATCH_EXPIRY_HOURS, DEFAULT_BATCH_EXPIRY_HOURS
from ._chat import run_chat
from ._clock import Clock
from ._embeddings import EmbeddingRequest, run_embeddings
from ._errors import ApiError
from ._faults import BatchPlan

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_LIST_STATUSES = frozenset({"validating", "in_progress", "completed", "failed", "expired", "cancelled"})
_PAYMENT_MESSAGE = (
    "Insufficient credits to release the batch results. Add more using https://openrouter.ai/settings/credits"
)
_FAILED_MESSAGE = "The batch failed during provider processing."


@dataclass
class _Batch:
    id: str
    seq: int
    created_at: float
    submission: Submission
    plan: BatchPlan
    durations: tuple[float, float, float]
    error_ids: frozenset[str]
    order: list[int]  # deterministic shuffle of item indexes: results are not in submission order
    provider: str  # the provider assigned to run the batch
    expires_at: float | None  # when the provider stops working on unfinished requests (None: never)
    usage: dict[str, Any] | None = None  # computed (and billed) once, when first seen completed

    @property
    def total(self) -> int:
        return len(self.submission.items)

    def phase(self, now: float) -> tuple[str, float | None, float]:
        """(status, finalized_at, fraction of items processed) at ``now``."""
        status, finalized_at, fraction = self._planned_phase(now)
        if finalized_at is None and self.expires_at is not None and now >= self.expires_at:
            # Durations longer than the provider's window: it gives up on what is left.
            return "expired", self.expires_at, min(fraction, 0.5)
        return status, finalized_at, fraction

    def _planned_phase(self, now: float) -> tuple[str, float | None, float]:
        validating, running, finalizing = self.durations
        elapsed = now - self.created_at
        if elapsed < validating:
            return "validating", None, 0.0
        if self.plan.outcome == "failed" or self.submission.failure:
            return "failed", self.created_at + validating, 0.0
        if elapsed < validating + running:
            return "in_progress", None, (elapsed - validating) / running if running else 1.0
        if self.plan.outcome == "expired":
            return "expired", self.created_at + validating + running, 0.5
        done = validating + running + finalizing
        if elapsed < done:
            return ("cancelling" if self.plan.outcome == "cancelled" else "finalizing"), None, 1.0
        return (self.plan.outcome or "completed"), self.created_at + done, 1.0


class BatchStore:
    def __init__(
        self,
        clock: Clock,
        account: Account,
        durations: Sequence[float],
        expiry_hours: Mapping[str, float | None] | None = None,
    ) -> None:
        if len(durations) != 3 or any(d < 0 for d in durations):
            raise ValueError("batch_durations must be three non-negative numbers of seconds")
        self._expiry_hours = {**BATCH_EXPIRY_HOURS, **(expiry_hours or {})}
        self._clock = clock
        self._account = account
        self._durations = (float(durations[0]), float(durations[1]), float(durations[2]))
        self._lock = threading.RLock()
        self._batches: dict[str, _Batch] = {}
        self._seq = 0
        self._payment_hold = False

    # -- commands --------------------------------------------------------------------------------

    def create(self, submission: Submission, plan: BatchPlan) -> dict[str, Any]:
        if self._account.remaining <= 0:
            raise ApiError(402, "Insufficient balance for this batch.")
        batch_id = "batch_" + secrets.token_hex(12)
        custom_ids = [item.custom_id for item in submission.items]
        rng = random.Random(hashlib.sha256("\0".join(custom_ids).encode()).digest())
        order = list(range(len(custom_ids)))
        rng.shuffle(order)
        sampled = rng.sample(custom_ids, round(plan.item_error_fraction * len(custom_ids)))
        provider = submission.model.assigned_batch_provider
        expiry_hours = self._expiry_hours.get(provider, DEFAULT_BATCH_EXPIRY_HOURS)
        created_at = self._clock.now()
        with self._lock:
            self._seq += 1
            batch = _Batch(
                id=batch_id,
                seq=self._seq,
                created_at=created_at,
                submission=submission,
                plan=plan,
                durations=self._durations,
                error_ids=frozenset(sampled) | {c for c in custom_ids if _named(c, plan.item_error_ids)},
                order=order,
                provider=provider,
                expires_at=None if expiry_hours is None else created_at + expiry_hours * 3600,
            )
            self._batches[batch_id] = batch
        return self._view(batch, with_results=False)

    def hold_payment(self) -> None:
        with self._lock:
            self._payment_hold = True

    def release_payment(self) -> None:
        with self._lock:
            self._payment_hold = False

    def delete(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._find(batch_id)
            status = batch.phase(self._clock.now())[0]
            if status not in TERMINAL:
                raise ApiError(
                    409,
                    "Only completed, failed, expired, or cancelled batches can be deleted. "
                    "Wait for the batch to finish and try again.",
                )
            self._settle(batch)
            del self._batches[batch_id]
        upstream = {"provider": batch.provider, "status": "deleted"}
        return {
            "id": batch_id,
            "object": "batch",
            "deletion": {"openrouter": "deleted", "upstream": upstream},
        }

    # -- queries ---------------------------------------------------------------------------------

    def get(self, batch_id: str) -> tuple[dict[str, Any], Iterator[dict[str, Any]] | None]:
        """The batch object (``results`` left out) and, when completed, an iterator of its rows."""
        with self._lock:
            batch = self._find(batch_id)
            view = self._view(batch, with_results=True)
        if view["status"] != "completed":
            return {**view, "results": None}, None
        self._check_payment(view)
        return view, self._rows(batch, 0, batch.total)

    def results_page(self, batch_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        with self._lock:
            batch = self._find(batch_id)
            view = self._view(batch, with_results=True)
        if view["status"] != "completed":
            raise ApiError(
                409, f"Batch results are available once the batch has completed (status: {view['status']})."
            )
        self._check_payment(view)
        start = _decode_cursor(cursor, batch.id) if cursor else 0
        end = min(start + limit, batch.total)
        return {
            "object": "list",
            "data": list(self._rows(batch, start, end)),
            "has_more": end < batch.total,
            "next_cursor": _encode_cursor(batch.id, end) if end < batch.total else None,
        }

    def list_batches(
        self,
        *,
        limit: int,
        after: str | None,
        statuses: set[str],
        created_after: float | None,
        created_before: float | None,
    ) -> dict[str, Any]:
        if not 1 <= limit <= 100 or not statuses <= _LIST_STATUSES:
            raise ApiError(400, "Invalid batch list query.")
        now = self._clock.now()
        with self._lock:
            batches = sorted(self._visible(now), key=lambda b: (b.created_at, b.seq), reverse=True)
            if after is not None:
                ids = [b.id for b in batches]
                if after not in ids:
                    raise ApiError(400, "Invalid batch list query.")
                batches = batches[ids.index(after) + 1 :]
            views: list[dict[str, Any]] = []
            for batch in batches:
                if created_after is not None and not batch.created_at > created_after:
                    continue
                if created_before is not None and not batch.created_at < created_before:
                    continue
                view = self._view(batch, with_results=False)
                # Stored jobs collapse finalizing/cancelling into in_progress for filtering.
                collapsed = (
                    "in_progress" if view["status"] in ("finalizing", "cancelling") else view["status"]
                )
                if statuses and collapsed not in statuses:
                    continue
                views.append(view)
                if len(views) > limit:
                    break
        page = views[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(views) > limit,
        }

    def settle_all(self) -> None:
        """Bill every batch that has completed since it was last looked at."""
        now = self._clock.now()
        with self._lock:
            for batch in self._batches.values():
                if batch.phase(now)[0] == "completed":
                    self._settle(batch)

    # -- internals -------------------------------------------------------------------------------

    def _visible(self, now: float) -> list[_Batch]:
        return [b for b in self._batches.values() if now - b.created_at >= b.plan.not_found_for]

    def _find(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        # The read-after-write lag fault hides a fresh batch exactly like an unknown id.
        if batch is None or self._clock.now() - batch.created_at < batch.plan.not_found_for:
            raise ApiError(404, f"Batch job {batch_id} not found.")
        return batch

    def _check_payment(self, view: dict[str, Any]) -> None:
        with self._lock:
            held = self._payment_hold
        if held:
            body = {**view, "results": None, "error": {"code": 402, "message": _PAYMENT_MESSAGE}}
            raise ApiError(402, _PAYMENT_MESSAGE, body=body)

    def _view(self, batch: _Batch, *, with_results: bool) -> dict[str, Any]:
        status, finalized_at, fraction = batch.phase(self._clock.now())
        if status == "completed":
            self._settle(batch)
        failures = len(batch.error_ids)
        if status == "failed":
            completed = failed = 0
        else:
            completed = math.floor(fraction * (batch.total - failures))
            failed = math.floor(fraction * failures)
        error = None
        if status == "failed":
            error = {"message": batch.plan.reason or batch.submission.failure or _FAILED_MESSAGE}
        elif status in ("expired", "cancelled") and batch.plan.reason:
            error = {"message": batch.plan.reason}
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.submission.endpoint,
            "model": batch.submission.model.id,
            "provider": batch.provider,
            "completion_window": "24h",
            "status": status,
            "created_at": int(batch.created_at),
            "expires_at": None if batch.expires_at is None else int(batch.expires_at),
            "finalized_at": int(finalized_at) if finalized_at is not None else None,
            "request_counts": {"total": batch.total, "completed": completed, "failed": failed},
            "usage": batch.usage if status == "completed" else None,
            "results": None,
            "error": error,
        }

    def _settle(self, batch: _Batch) -> None:
        if batch.usage is not None:
            return
        prompt_tokens = completion_tokens = 0
        for row_outcome in self._outcomes(batch, 0, batch.total):
            if row_outcome is not None:
                prompt_tokens += row_outcome.prompt_tokens
                completion_tokens += row_outcome.completion_tokens
        # Prices are linear in tokens: pricing the totals is exact (no sum of rounded floats).
        prompt_cost, completion_cost = batch.submission.model.cost(
            prompt_tokens, completion_tokens, batch=True
        )
        cost = round(prompt_cost + completion_cost, 12)
        batch.usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": cost,
            "is_byok": False,
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_prompt_cost": prompt_cost,
                "upstream_inference_completions_cost": completion_cost,
            },
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        self._account.charge(cost)

    def _outcomes(self, batch: _Batch, start: int, end: int) -> Iterator[Any]:
        created = int(batch.created_at)
        for index in batch.order[start:end]:
            item = batch.submission.items[index]
            if item.custom_id in batch.error_ids or item.request is None:
                yield None
                continue
            outcome_id = f"gen-batch-{created}-{_digest(batch.id, item.custom_id, length=20)}"
            if isinstance(item.request, EmbeddingRequest):
                yield run_embeddings(item.request, created=created, outcome_id=outcome_id, batch=True)
                continue
            yield run_chat(
                item.request,
                created=created,
                outcome_id=outcome_id,
                batch=True,
                violate_schema=_named(item.custom_id, batch.plan.invalid_output_ids),
                provider=batch.provider,
            )

    def _rows(self, batch: _Batch, start: int, end: int) -> Iterator[dict[str, Any]]:
        indexes = batch.order[start:end]
        for index, outcome in zip(indexes, self._outcomes(batch, start, end), strict=True):
            custom_id = batch.submission.items[index].custom_id
            row: dict[str, Any] = {
                "id": f"batch_req_{_digest(batch.id, custom_id, length=24)}",
                "custom_id": custom_id,
            }
            if outcome is None:
                row["response"] = None
                row["error"] = {
                    "type": "server_error",
                    "message": "The provider returned an error for this request.",
                    "param": None,
                    "error_type": batch.plan.item_error_type,
                }
            else:
                row["response"] = {
                    "status_code": 200,
                    "request_id": f"request_{_digest(batch.id, custom_id, length=16)}",
                    "body": outcome.result(),
                }
                row["error"] = None
            yield row


def _named(custom_id: str, ids: frozenset[str]) -> bool:
    """Whether a fault names this request: by its custom_id, or by the item id in front of the run tag
    that OpenRouterBatchOperator appends (``{item id}~{tag}``)."""
    return custom_id in ids or custom_id.rpartition("~")[0] in ids


def _digest(*parts: str, length: int) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def _encode_cursor(batch_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{batch_id}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, batch_id: str) -> int:
    try:
        version, owner, offset = (
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        )
        if version == "v1" and owner == batch_id and int(offset) >= 0:
            return int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise ApiError(400, "Invalid results cursor.")


def parse_list_timestamp(value: str | None) -> float | None:
    """Unix seconds as digits, or an ISO date / date-time (naive values are UTC)."""
    if value is None:
        return None
    if value.isdigit():
        return float(value)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "Invalid batch list query.") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()
