"""The lease one SIP dialog holds: asked for, renewed while the dialog lives, freed once.

The edge owns no policy: it asks the gate (:meth:`DialogLease.decide`, the same idempotent
``acquire`` every poll of a queued call repeats), heartbeats an admitted lease every third of
its TTL (:meth:`renew`) and frees it exactly once (:meth:`release`) whichever of the ends
comes first: BYE from either leg, CANCEL, the agent's failure, no answer within
``forward_timeout``, ``max_call_duration``, or a lease the gate no longer holds. Every
decision is counted and logged as at the HTTP edge (edge ``sip``).
"""

from __future__ import annotations

import logging

from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Call, Decision, Outcome, RenewStatus
from callgate.service.logs import log_decision
from callgate.service.metrics import Metrics

log = logging.getLogger("callgate.sip")


class DialogLease:
    """The gate's side of one inbound SIP call (synchronous; called on the SIP loop)."""

    def __init__(self, gate: Gate, metrics: Metrics | None, call: Call, account: str) -> None:
        self.gate = gate
        self.metrics = metrics
        self.call = call
        self.account = account
        self.decision: Decision | None = None
        self.ended_by: str | None = None

    @property
    def ended(self) -> bool:
        return self.ended_by is not None

    def decide(self) -> Decision:
        """Ask the gate (again, for a queued call): admitted, queued or refused."""
        decision = self.gate.acquire(self.call)
        repeat = False
        if self.metrics is not None:
            repeat = self.metrics.decided(decision, self.account)
        log_decision(decision, self.call, self.account, edge="sip", repeat=repeat)
        self.decision = decision
        return decision

    @property
    def renew_interval_s(self) -> float:
        """How often to heartbeat: a third of the lease's TTL (two chances before expiry)."""
        lease = self.decision.lease if self.decision is not None else None
        ttl_s = lease.ttl_s if lease is not None else self.gate.stack.gate.lease_ttl
        return max(0.05, ttl_s / 3)

    def renew(self) -> bool:
        """Heartbeat the lease; False once the gate no longer holds it (the call must end).

        A store that cannot be reached is not the call's fault: it is logged and the next
        heartbeat tries again (the lease still has two thirds of its TTL).
        """
        if self.ended:
            return False
        try:
            result = self.gate.renew(self.call.call_id, self.account)
        except StoreError as exc:
            log.warning("sip %s: renew failed (%s); trying again", self.call.call_id, exc)
            if self.metrics is not None:
                self.metrics.store_error("renew")
            return True
        if result.status is RenewStatus.RENEWED:
            return True
        log.warning("sip %s: the lease is %s; ending the call", self.call.call_id,
                    result.status.value)
        return False

    def release(self, why: str) -> bool:
        """Free the lease (or leave the queue) once; True the first time only."""
        if self.ended:
            return False
        self.ended_by = why
        decision = self.decision
        if decision is None or decision.outcome not in (Outcome.ADMITTED, Outcome.QUEUED):
            return True  # refused: nothing held, nothing to free
        try:
            result = self.gate.release(self.call.call_id, self.account)
        except StoreError as exc:
            # The lease expires within one TTL on its own: nothing leaks for longer.
            log.warning("sip %s: release failed (%s); the lease expires within its TTL",
                        self.call.call_id, exc)
            if self.metrics is not None:
                self.metrics.store_error("release")
            return True
        if self.metrics is not None:
            self.metrics.released(self.call.call_id, self.account, result)
        log.info("sip %s: released (%s)", self.call.call_id, why)
        return True
