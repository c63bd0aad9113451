"""When the hook tries a failed call again, and how long it waits first.

Whether a failure may pass is the error's own ``transient`` (decided once, in
:mod:`airflow_openrouter.exceptions`). Whether the *hook* may send the call again on top of that is
policy, decided here from what the call is:

* not sent (connect error, connect or pool timeout): retried for every call;
* sent without an answer (read timeout, connection dropped, request deadline): retried only for calls
  that are idempotent and not billed (reads). Never for a non-streamed chat completion, which may be
  generating and billed, nor for a batch creation, which may exist;
* answered 408, 429 or 5xx: retried for every call, except that a non-idempotent one (a batch creation)
  is retried only on 429, the server saying it did nothing;
* answered 402 with ``Retry-After``: retried (the server said when to come back);
* an error after billed output: never.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from airflow_openrouter.exceptions import OpenRouterAPIError, OpenRouterConnectionError, OpenRouterError

__all__ = ["RetryPolicy", "retry_after_seconds"]


@dataclass
class RetryPolicy:
    """When to try a failed call again, and how long to wait first.

    Exponential backoff with full jitter, unless the server said how long to wait (``Retry-After``).
    Gives up after ``max_retries`` retries or once the waits would add up to more than
    ``max_total_wait`` seconds. ``sleep`` / ``async_sleep`` are injectable so tests never wait and an
    operator can end a wait when its task is killed.
    """

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_total_wait: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def should_retry(self, error: OpenRouterError, *, idempotent: bool, billed: bool = False) -> bool:
        """Whether sending the call again is safe and may succeed.

        :param idempotent: sending it twice has the effect of sending it once (not a batch creation).
        :param billed: the server charges for it once it processes it (a non-streamed chat completion).
        """
        if isinstance(error, OpenRouterConnectionError):
            if not error.request_sent:
                return True
            # Sent without an answer: it may have been processed, and a second one would pay again.
            return idempotent and not billed
        if not isinstance(error, OpenRouterAPIError) or error.billed:
            return False
        if error.status == 402:
            return error.retry_after is not None
        if not error.transient:
            return False
        # Creating a batch twice would bill twice; a 429 is the server saying it did nothing.
        return idempotent or error.status == 429

    def delay(
        self,
        retry_number: int,
        error: OpenRouterError,
        waited: float,
        *,
        idempotent: bool,
        billed: bool = False,
    ) -> float | None:
        """Seconds to wait before retry number ``retry_number`` (1-based), or ``None`` to give up."""
        if retry_number > self.max_retries:
            return None
        if not self.should_retry(error, idempotent=idempotent, billed=billed):
            return None
        asked = getattr(error, "retry_after", None)
        if asked is not None:
            wait = asked
        else:
            wait = self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (retry_number - 1)))
        if waited + wait > self.max_total_wait:
            return None
        return wait


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (delta seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())
