"""When the client asks again: polling a queued call, retrying, renewing, reconnecting.

Both clients (:class:`callgate.client.GateClient`, async, and
:class:`callgate.client_sync.SyncGateClient`) do their I/O their own way and take every
timing decision from here, so the two can never disagree about when to ask again.
"""

from __future__ import annotations

from typing import Any

import httpx
import stamina

from callgate.client_wire import GateDecision
from callgate.model import Outcome

MIN_POLL_S = 0.05
"""The shortest pause between two polls of a queued call, whatever the estimate says."""

CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
"""Errors where the request surely never reached the gate: safe to send again."""


def connect_retries(connect_retry_s: float) -> Any:  # stamina's iterator type is private
    """Retry attempts for one request: transient connect errors are retried with
    exponential backoff and jitter for at most ``connect_retry_s`` seconds (0: never)."""
    return stamina.retry_context(
        on=CONNECT_ERRORS, attempts=None if connect_retry_s > 0 else 1,
        timeout=connect_retry_s if connect_retry_s > 0 else None,
        wait_initial=0.05, wait_max=0.5, wait_jitter=0.05,
    )


class AdmitPacing:
    """What to do after each answer while ``call()`` waits for admission.

    ``pause(decision)`` is the seconds to wait before asking again, or None when the
    answer is final; a ``retry_later`` answered with a retry moves :attr:`attempt` on.
    ``max_wait_s`` bounds the total time spent waiting.
    """

    def __init__(self, attempt: int, *, wait: bool, retry: bool, max_wait_s: float | None,
                 poll_interval_s: float) -> None:
        self.attempt = attempt
        self.waited_s = 0.0
        self._wait, self._retry, self._max_wait_s = wait, retry, max_wait_s
        self._poll_interval_s = poll_interval_s

    def pause(self, decision: GateDecision) -> float | None:
        if decision.outcome is Outcome.QUEUED and self._wait:
            assert decision.queue is not None  # checked by the parser
            pause = max(MIN_POLL_S, min(self._poll_interval_s, decision.queue.estimated_wait_s))
            next_attempt = self.attempt
        elif decision.outcome is Outcome.RETRY_LATER and self._retry:
            pause = decision.retry_after_s or 0.0
            next_attempt = self.attempt + 1
        else:
            return None
        if self._max_wait_s is not None:
            left = self._max_wait_s - self.waited_s
            if left <= 0 or (decision.outcome is Outcome.RETRY_LATER and pause > left):
                return None
            pause = min(pause, left)
        self.attempt = next_attempt
        self.waited_s += pause
        return pause


class RenewPacing:
    """The heartbeat's bookkeeping: how long to wait, and when failures mean the lease is gone.

    A renew that fails without an answer about the lease (network, 5xx, an unreadable
    answer) is retried at the next tick; once failures have spanned a whole TTL, the gate
    has expired the lease, so :meth:`failed` says it is lost.
    """

    def __init__(self, every_s: float | None) -> None:
        self._every_s = every_s
        self._failed_s = 0.0

    def interval(self, ttl_s: float) -> float:
        return self._every_s or ttl_s / 3

    def renewed(self) -> None:
        self._failed_s = 0.0

    def failed(self, interval_s: float, ttl_s: float) -> bool:
        """Count one failed tick of ``interval_s``; True once the lease must be given up."""
        self._failed_s += interval_s
        return self._failed_s >= ttl_s
