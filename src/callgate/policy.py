"""What a caller is told: a store's verdict, shaped into a decision (pure; DESIGN.md, Decisions).

Given the stack, its limits and a random source for jitter, :class:`Policy` turns a
:class:`~callgate.stores.base.Verdict` into the :class:`~callgate.model.Decision` the
caller gets: which blocking layer is named (the one with the largest retry-after), the
queue position and wait estimate, the outbound backoff, the messages, and the answer when
the store cannot be reached. It reads no clock and touches no store; the gate does both.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from callgate.config import Stack
from callgate.errors import CallConflictError
from callgate.model import Call, Decision, Layer, Lease, Outcome, QueueInfo, Reason
from callgate.prompts import prompts_for
from callgate.stores.base import Blocker, Limits, Record, Verdict, VerdictKind, split_key

ENDED_MESSAGE = "This call has already ended; a new call needs a new call id."


@dataclass(frozen=True)
class Policy:
    """The answers of one stack (built at each load, with the limits the gate gives its store)."""

    stack: Stack
    limits: Limits

    def decide(
        self, call: Call, verdict: Verdict, now: float, rng: random.Random
    ) -> tuple[Decision, str | None]:
        """The decision for ``verdict``, and the key a final rejection names (to remember
        it, so that a retry of the same call id is told the same), else None."""
        kind = verdict.kind
        record = verdict.record
        if kind is VerdictKind.ADMITTED:
            assert record is not None
            lease = lease_of(record)
            if verdict.local:
                return Decision(call.call_id, Outcome.ADMITTED, Layer.STORE, "local",
                                Reason.ADMITTED_LOCAL, lease), None
            if verdict.blockers:  # shadow mode admitted a call it would have refused
                pick, _ = self.pick(call, verdict.blockers, now, rng)
                layer, scope = split_key(pick.key)
                return Decision(call.call_id, Outcome.ADMITTED, layer, scope, Reason.SHADOW,
                                lease), None
            if record.promoted:
                return Decision(call.call_id, Outcome.ADMITTED, Layer.QUEUE, call.number,
                                Reason.PROMOTED, lease), None
            return Decision(call.call_id, Outcome.ADMITTED, Layer.NUMBER, call.number,
                            Reason.ADMITTED, lease), None
        if kind is VerdictKind.CONFLICT:
            raise CallConflictError(
                f"call id {call.call_id!r} was already used with a different body; "
                "use a new call id for a new call"
            )
        inbound = self.stack.inbound
        if kind is VerdictKind.QUEUED:
            pick, wait = self.pick(call, verdict.blockers, now, rng)
            layer, scope = split_key(pick.key)
            estimate = max(wait, self.queue_estimate(pick.key, verdict.position))
            return Decision(call.call_id, Outcome.QUEUED, layer, scope, pick.reason,
                            queue=QueueInfo(verdict.position, round(estimate, 3)),
                            retry_after_s=None,
                            message=prompts_for(self.stack, call.number).hold_message), None
        if kind is VerdictKind.QUEUE_FULL:
            # The kernel named the full layer on the record (kernel.full_key), as a replay does.
            assert record is not None and record.blocker_key is not None
            layer, scope = split_key(record.blocker_key)
            return Decision(call.call_id, Outcome.REJECTED, layer, scope,
                            Reason.QUEUE_FULL, retry_after_s=inbound.retry_after,
                            message=prompts_for(self.stack, call.number).overflow_message), None
        if kind is VerdictKind.BLOCKED:
            pick, wait = self.pick(call, verdict.blockers, now, rng)
            layer, scope = split_key(pick.key)
            if call.attempt >= self.stack.outbound.max_attempts:
                return Decision(call.call_id, Outcome.REJECTED, layer, scope,
                                Reason.MAX_ATTEMPTS,
                                message=attempts_message(call.attempt)), pick.key
            return Decision(call.call_id, Outcome.RETRY_LATER, layer, scope, pick.reason,
                            retry_after_s=round(wait, 3)), None
        if kind is VerdictKind.REPLAY:
            assert record is not None and record.reason is not None
            layer, scope = split_key(record.blocker_key or f"queue:{call.number}")
            retry = inbound.retry_after if call.direction == "inbound" else None
            message = (prompts_for(self.stack, call.number).overflow_message
                       if call.direction == "inbound"
                       else attempts_message(call.attempt))
            return Decision(call.call_id, Outcome.REJECTED, layer, scope, record.reason,
                            retry_after_s=retry, message=message), None
        return Decision(call.call_id, Outcome.REJECTED, Layer.NUMBER, call.number,
                        Reason.CALL_ENDED, message=ENDED_MESSAGE), None

    def store_down(self, call: Call, rng: random.Random) -> Decision:
        """The answer when the store cannot decide (``on_store_error = "reject"``, or
        ``admit_local`` with no local room)."""
        retry = (self.stack.inbound.retry_after if call.direction == "inbound"
                 else self.backoff(call.attempt, rng))
        return Decision(call.call_id, Outcome.REJECTED, Layer.STORE,
                        self.stack.gate.store.split(":")[0], Reason.STORE_UNAVAILABLE,
                        retry_after_s=round(retry, 3),
                        message=prompts_for(self.stack, call.number).overflow_message)

    def pick(
        self, call: Call, blockers: tuple[Blocker, ...], now: float, rng: random.Random
    ) -> tuple[Blocker, float]:
        """The blocker with the largest retry-after (the first on a tie), and that wait."""
        backoff = self.backoff(call.attempt, rng)
        best: tuple[float, Blocker] | None = None
        for blocker in blockers:
            wait = max(0.0, blocker.until - now) if blocker.until is not None else backoff
            if math.isinf(wait):
                wait = self.stack.outbound.retry_max
            if best is None or wait > best[0]:
                best = (wait, blocker)
        assert best is not None, "a blocked verdict always carries a blocker"
        return best[1], best[0]

    def queue_estimate(self, key: str, position: int) -> float:
        """Seconds until ``position`` callers have passed through the blocking scope."""
        window = self.limits.windows.get(key)
        if window is not None:
            limit, period = window
            return position * period / max(limit, 1)
        cap = self.limits.caps.get(key) or 1
        return position * self.stack.inbound.handle_time / cap

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """retry_base x 2^(attempt-1), at most retry_max; full jitter draws below it."""
        out = self.stack.outbound
        ceiling = min(out.retry_max, out.retry_base * 2 ** min(attempt - 1, 60))
        return rng.uniform(0.0, ceiling) if out.jitter == "full" else ceiling


def attempts_message(attempt: int) -> str:
    return f"gave up after {attempt} attempt(s): every retry found a layer full"


def lease_of(record: Record | None) -> Lease:
    assert record is not None
    return Lease(record.call_id, record.account, record.expires_at, record.ttl_s,
                 dict(record.keys), record.admitted_at)
