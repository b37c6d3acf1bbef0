"""The dialler: who is called when, from which of our numbers, never past the gate.

Picture a switchboard operator with a stack of index cards sorted by when each contact
may next be called. She takes the top card when its time has come; if it is night where
that contact lives, she files it again at their next calling hour. Otherwise she picks the
caller number with the most headroom (:func:`headroom`), asks the gate for that call, and
only with an admission writes the try in the ledger and dials. A refusal names when to
ask again (``retry_after_s``): that number rests until then (a concurrency refusal also
ends when one of her own calls hangs up) and she tries the next number; when every number
rests, she waits. A card is never dropped: it ends placed, unknown or skipped.

Time comes from a :class:`Timer`: the wall clock for a real campaign, or a
:class:`~callgate.testing.FakeClock` that jumps from one event to the next for
``--simulate`` (the simulator's style: events in a heap keyed by ``(time, kind,
sequence)``, so ties break the same way every run). The gate reads the same clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from callgate.dialer.campaign import Campaign, Contact, append_dnc
from callgate.dialer.events import EventLog
from callgate.dialer.headroom import Headroom
from callgate.dialer.inbox import Inbox
from callgate.dialer.ledger import Ledger, TryRecord
from callgate.dialer.pacing import Pacing
from callgate.dialer.placers import Attempt, Placement, Placer
from callgate.errors import CallConflictError, StoreError
from callgate.gate import Gate
from callgate.model import Call, Outcome
from callgate.testing import FakeClock

HOUR_S = 3600.0
KILL_ENV = "CALLGATE_DIAL_KILL_AT"
"""Fault injection for the crash test: ``POINT:N`` sends this process SIGKILL the N-th time
it reaches POINT (``before_place``, ``after_place``, ``after_record``)."""
# Event kinds are also the tie-break at one instant: calls end (and free slots) first.
_END, _INBOUND_END, _INBOUND, _POLL = range(4)
_RETRIED_RESULTS = ("busy", "no_answer", "failed", "abandoned")
POLL_S = 0.5  # how often (wall) the state file is read for the gate's facts and opt-outs


# time -----------------------------------------------------------------------------------
class Timer(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, at: float) -> None: ...


class WallTimer:
    """Real time (epoch seconds); sleeps in short naps so progress keeps refreshing."""

    def __init__(self, nap_s: float = 0.5) -> None:
        self._nap_s = nap_s

    def now(self) -> float:
        return time.time()

    def sleep_until(self, at: float) -> None:
        rest = at - time.time()
        if rest > 0:
            time.sleep(min(rest, self._nap_s))


class VirtualTimer:
    """Virtual epoch seconds: sleeping jumps the clock (``--simulate``)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now

    def sleep_until(self, at: float) -> None:
        self.clock.jump(max(at, self.clock.now))


# what it reports --------------------------------------------------------------------------
@dataclass
class Progress:
    """A snapshot for the live view (times in the dialler's epoch seconds)."""

    now: float
    total: int
    placed: int
    unknown: int
    skipped: int
    pending: int
    in_call: int
    waiting_window: int
    outside_hours: int
    per_number_last_hour: dict[str, int]
    holding: str | None
    eta_s: float | None
    paused: str | None = None
    abandonment: dict[str, Any] | None = None


@dataclass
class InboundTraffic:
    """Inbound calls injected on the campaign's account during ``--simulate``."""

    calls_per_hour: float
    aht_s: float
    numbers: tuple[str, ...]
    seed: int = 0
    poll_s: float = 2.0
    offered: int = 0
    admitted_at_once: int = 0
    admitted_after_queue: int = 0
    refused: Counter[str] = field(default_factory=Counter)


class _KillPoints:
    """Reads :data:`KILL_ENV` once; SIGKILLs this process at the named point and count."""

    def __init__(self) -> None:
        spec = os.environ.get(KILL_ENV, "")
        point, _, count = spec.partition(":")
        self._point, self._left = (point, int(count)) if count.isdigit() else ("", 0)

    def reach(self, point: str) -> None:
        if point == self._point:
            self._left -= 1
            if self._left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


class Stopped(Exception):
    """The dialler was asked to stop (:attr:`Dialer.stop_requested`) and stopped between
    tries: every try so far is recorded; running again resumes."""


# the dialler --------------------------------------------------------------------------------
class Dialer:
    """Runs ``campaign`` through ``gate`` until every contact is placed, unknown or skipped."""

    def __init__(self, campaign: Campaign, gate: Gate, ledger: Ledger, placer: Placer,
                 timer: Timer, *, events: EventLog | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 inbound: InboundTraffic | None = None, resume: bool = False) -> None:
        self.campaign, self.gate, self.ledger, self.placer = campaign, gate, ledger, placer
        self.timer, self.events, self.inbound = timer, events, inbound
        self.on_progress = on_progress
        self._stack = gate.stack
        self._account = campaign.spec.account
        self._contacts = {c.row: c for c in campaign.contacts}
        self._tries: dict[int, int] = {}
        self._due: list[tuple[float, int]] = []  # (when, row): the operator's card stack
        self._outside: set[int] = set()  # rows filed again for their next calling hour
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._rests: dict[str, tuple[float, bool]] = {}  # number -> (until, ends on a hang-up)
        self._active: dict[str, str] = {}  # call id -> its caller number, while it lasts
        self._headroom: Headroom | None = None
        self._recent: dict[str, deque[float]] = {n: deque() for n in campaign.caller_ids}
        self._holding: str | None = None
        self._held_back: Counter[str] = Counter()
        self._placed_per_number: Counter[str] = Counter()
        self._kill = _KillPoints()
        self._rng = random.Random(inbound.seed if inbound else 0)
        self._inbound_n = 0
        self._first_placed: float | None = None
        self._last_placed: float | None = None
        self._last_progress = 0.0
        self._last_saved = -POLL_S
        self._last_poll = float("-inf")
        self._resume = resume
        self._inbox = Inbox(ledger, campaign.spec)
        self._pacing = Pacing(ledger, campaign.spec)
        self._optouts: set[str] = set()
        self._opted_out = 0
        self._dnc_error: str | None = None
        self._ends: dict[str, tuple[str, float]] = {}  # call id -> (result, placed at)
        self._retried = _RETRIED_RESULTS + (
            ("machine",) if campaign.spec.voicemail == "hangup" else ())
        # Set from a signal handler; read only between tries, so a stop never falls between
        # an admission, its 'placing' record and the placer.
        self.stop_requested = False

    # the loop ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Dial until done; returns the summary (the ``--json`` document)."""
        started = self.timer.now()
        self.ledger.start(self.campaign)
        self.ledger.recover(started)
        self._catch_up_events()
        self._pacing.start(started, resume=self._resume)
        for record in self.ledger.ringing():  # a previous run's calls still in the provider's hands
            self._inbox.add(record.call_id, record.row, record.try_no, record.caller_id,
                            record.placed_at)
        awaited = {call.row for call in self._inbox.calls.values()}
        for pending in self.ledger.pending():
            self._tries[pending.row] = pending.tries
            if pending.row not in awaited:
                heapq.heappush(self._due, (pending.next_at or started, pending.row))
        if self.inbound is not None and self.inbound.calls_per_hour > 0:
            self._schedule(started + self._rng.expovariate(self.inbound.calls_per_hour / HOUR_S),
                           _INBOUND, None)
        try:
            while True:
                now = self.timer.now()
                while self._events and self._events[0][0] <= now:
                    _, kind, _, payload = heapq.heappop(self._events)
                    self._handle(kind, payload, now)
                self._poll(now)
                self._dispatch(now)
                self._report(now)
                idle = not self._active and not self._inbox.calls
                if idle and (not self._due or self._pacing.reason):
                    break  # done, or paused with nothing left in flight
                if self.stop_requested:
                    raise Stopped("stopped on request")
                self.timer.sleep_until(self._next_wake(now))
        finally:
            # Stopped (done, Ctrl-C, SIGTERM): the leases the dialler holds for its own
            # dry-run calls go back now rather than at their expiry; the ledger already
            # says where to resume.
            for call_id in list(self._active):
                self._release(call_id)
            self._active.clear()
            self._end_inbound()
            self._save_progress(self.timer.now(), running=False)
        return self._summary(started, self.timer.now())

    def _next_wake(self, now: float) -> float:
        candidates = [self._events[0][0]] if self._events else []
        if self._due:
            due = self._due[0][0]
            if due > now:
                candidates.append(due)
            elif not self._pacing.reason:  # due now but every number rests: wake when the
                rests = [until for until, _ in self._rests.values() if until > now]  # first may
                candidates.append(min(rests) if rests else now)
        if self._inbox.calls:  # results come through the state file: read it again soon
            candidates.append(now + POLL_S)
        return min(candidates) if candidates else now

    def _schedule(self, at: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, kind, self._seq, payload))

    def _handle(self, kind: int, payload: Any, now: float) -> None:
        if kind == _END:
            result, placed_at = self._ends.pop(payload, ("", 0.0))
            self._pacing.note(result, placed_at)
            number = self._active.pop(payload, None)
            if number is not None and self._headroom is not None:
                self._headroom.freed(number)
            self._release(payload)
            self._end_concurrency_rests()
        elif kind == _INBOUND_END:
            self._release(payload)
            self._end_concurrency_rests()
        elif kind == _INBOUND:
            self._inbound_arrival(now)
        elif kind == _POLL:
            self._inbound_ask(payload, now, first=False)

    def _release(self, call_id: str) -> None:
        with contextlib.suppress(StoreError):  # the lease then expires within its TTL
            self.gate.release(call_id, self._account)

    def _end_concurrency_rests(self) -> None:
        for number, (_, on_hangup) in list(self._rests.items()):
            if on_hangup:
                del self._rests[number]

    # dialling -----------------------------------------------------------------------------
    def _dispatch(self, now: float) -> None:
        hours = self.campaign.hours
        paused = self._pacing.check(now)
        if paused:
            self._holding = f"paused: {paused}"
            return
        while self._due and self._due[0][0] <= now and not self.stop_requested:
            row = self._due[0][1]
            contact = self._contacts[row]
            if contact.phone in self._optouts:
                heapq.heappop(self._due)
                self.ledger.skip(row, "opted_out")
                self._opted_out += 1
                continue
            opens = hours.next_open(now, contact.zone)
            if opens is None or opens > now:
                # validation guarantees a calling day, so a next opening always exists
                heapq.heapreplace(self._due, (opens if opens is not None else now + 86_400,
                                              row))
                self._outside.add(row)
                continue
            self._outside.discard(row)
            free = [n for n in self.campaign.caller_ids
                    if self._rests.get(n, (0.0, False))[0] <= now]
            if not free:
                return
            if self._headroom is None or now - self._headroom.read_at >= Headroom.max_age_s:
                self._headroom = Headroom(self._stack, self.gate.usage(),
                                          self.campaign.caller_ids, now)
            number = self._headroom.pick(free)
            assert number is not None
            try_no = self._tries.get(row, 0) + 1
            call_id = self.ledger.call_id(self.campaign.name, row, try_no)
            try:
                decision = self.gate.acquire(Call(call_id, "outbound", number,
                                                  remote=contact.phone))
            except CallConflictError:
                # only after a max_attempts tombstone on this id: wait until it is gone
                self._rest_all(now + self._stack.gate.tombstone_ttl, "call id replay")
                return
            if decision.outcome is Outcome.ADMITTED:
                heapq.heappop(self._due)
                self._active[call_id] = number  # from here on a stop gives the slot back
                self._headroom.took(number)
                assert decision.lease is not None
                self._place(contact, try_no, call_id, number, dict(decision.lease.keys))
                continue
            what = f"{decision.layer} {decision.scope} ({decision.reason})"
            self._held_back[f"{decision.layer}:{decision.reason}"] += 1
            self._holding = what
            wait = decision.retry_after_s
            if decision.outcome is Outcome.RETRY_LATER and wait is not None:
                if self._headroom.room(number) > 0:
                    self._headroom = None  # it was wrong about this number: read again
                until, on_hangup = now + max(wait, 1e-3), decision.layer != "window"
                if decision.layer == "number" or (decision.layer == "window" and (
                        decision.scope or "").startswith(f"{number}:")):
                    self._rests[number] = (until, on_hangup)
                    continue
                # a shared scope (account, trunk, provider, resource): every number waits
                for each in self.campaign.caller_ids:
                    self._rests[each] = (until, on_hangup)
                return
            # rejected (store down, or the stack's max_attempts): every number waits
            self._rest_all(now + (wait if wait else self._stack.outbound.retry_base), what)
            return

    def _rest_all(self, until: float, why: str) -> None:
        self._holding = why
        for number in self.campaign.caller_ids:
            self._rests[number] = (until, False)

    def _place(self, contact: Contact, try_no: int, call_id: str, number: str,
               keys: dict[str, str]) -> None:
        at = self.timer.now()
        self.ledger.begin_try(contact.row, try_no, call_id, number, at)
        self._tries[contact.row] = try_no
        self._kill.reach("before_place")
        spec = self.campaign.spec
        try:
            placement = self.placer.place(Attempt(call_id, contact.row, try_no, contact.phone,
                                                  number, spec.ring_timeout, contact.extra,
                                                  keys))
        except Exception as exc:  # any placer failure: the call may have gone out
            # Nobody can tell whether the phone rang: recorded unknown and never tried again,
            # like a try a crash interrupted.
            placement = Placement("unknown", f"placer error: {type(exc).__name__}: {exc}")
        self._kill.reach("after_place")
        if placement.pending:  # the provider took it: the result comes through the gate
            self.ledger.mark_sent(call_id, placement.provider_id)
            self._active.pop(call_id, None)  # the gate releases its lease on the final status
            self._inbox.add(call_id, contact.row, try_no, number, at)
        else:
            self._ends[call_id] = (placement.result, at)
            self._hold_lease(call_id, number, placement, at + placement.duration_s)
            self._finish(contact, try_no, call_id, number, at, placement)
        self._recent[number].append(at)
        self._placed_per_number[number] += 1
        self._first_placed = at if self._first_placed is None else self._first_placed
        self._last_placed = at

    def _finish(self, contact: Contact, try_no: int, call_id: str, number: str, at: float,
                placement: Placement) -> None:
        """Record a try's result, and when (if ever) the contact is tried again."""
        spec = self.campaign.spec
        ended = at + placement.duration_s
        delay = getattr(spec.retry, placement.result, None) \
            if placement.result in self._retried else None
        next_at = ended + delay if delay is not None and try_no < spec.max_tries else None
        unknown = placement.result == "unknown"
        self.ledger.finish_try(call_id, contact.row, placement.result, placement.reason,
                               ended, next_at, unknown=unknown)
        self._kill.reach("after_record")
        record = TryRecord(call_id, contact.row, try_no, number, placement.result, at, ended,
                           placement.reason)
        self._emit_try(record, placement.result)
        if next_at is not None:
            heapq.heappush(self._due, (next_at, contact.row))

    def _poll(self, now: float) -> None:
        """Read what the gate wrote: results of the provider's calls, and opt-outs."""
        # every POLL_S of the dialler's time: wall time, or virtual time under --simulate
        moment = now if isinstance(self.timer, VirtualTimer) else time.monotonic()
        if moment - self._last_poll < POLL_S:
            return
        self._last_poll = moment
        optouts = self.ledger.optouts()
        fresh = sorted(optouts - self._optouts - self.campaign.dnc_numbers)
        self._optouts = optouts
        if fresh and self.campaign.spec.dnc is not None:
            try:
                append_dnc(self.campaign, fresh)
                self.campaign = dataclasses.replace(
                    self.campaign, dnc_numbers=self.campaign.dnc_numbers | set(fresh))
            except OSError as exc:  # the state file still has them: never called here
                self._dnc_error = f"could not add opt-outs to {self.campaign.spec.dnc}: {exc}"
        for call, placement in self._inbox.collect(now):
            if placement.result == "unknown":
                self._release(call.call_id)  # no status came: give the slot back ourselves
            if self._headroom is not None:
                self._headroom.freed(call.number)
            self._end_concurrency_rests()
            self._pacing.note(placement.result, call.facts.placed_at)
            self._finish(self._contacts[call.row], call.try_no, call.call_id, call.number,
                         call.facts.placed_at, placement)

    def _hold_lease(self, call_id: str, number: str, placement: Placement, ended: float
                    ) -> None:
        """Keep the lease for the call's life (ring + talk), then release it."""
        life = placement.duration_s
        if life <= 0:
            result, placed_at = self._ends.pop(call_id, ("", 0.0))
            self._pacing.note(result, placed_at)
            self._release(call_id)
            self._active.pop(call_id, None)
            if self._headroom is not None:
                self._headroom.freed(number)
            return
        if life > self._stack.outbound.dial_ttl / 2:
            # one renew covering the known length (the dry run knows it up front)
            with contextlib.suppress(StoreError):
                self.gate.renew(call_id, self._account, ttl_s=life + self._stack.gate.lease_ttl)
        self._schedule(ended, _END, call_id)

    # inbound (simulation) -----------------------------------------------------------------
    def _inbound_arrival(self, now: float) -> None:
        traffic = self.inbound
        assert traffic is not None
        if not self._due and not self._active:
            return  # the campaign is over: stop offering inbound calls
        self._inbound_n += 1
        traffic.offered += 1
        number = traffic.numbers[self._rng.randrange(len(traffic.numbers))]
        self._inbound_ask(Call(f"inbound:{self._inbound_n}", "inbound", number), now,
                          first=True)
        self._schedule(now + self._rng.expovariate(traffic.calls_per_hour / HOUR_S),
                       _INBOUND, None)

    def _inbound_ask(self, call: Call, now: float, *, first: bool) -> None:
        traffic = self.inbound
        assert traffic is not None
        decision = self.gate.acquire(call)
        if decision.outcome is Outcome.ADMITTED:
            if first:
                traffic.admitted_at_once += 1
            else:
                traffic.admitted_after_queue += 1
            self._schedule(now + self._rng.expovariate(1 / traffic.aht_s), _INBOUND_END,
                           call.call_id)
        elif decision.outcome is Outcome.QUEUED:
            self._schedule(now + traffic.poll_s, _POLL, call)
        else:
            traffic.refused[str(decision.reason)] += 1

    def _end_inbound(self) -> None:
        for _, kind, _, payload in self._events:
            if kind == _INBOUND_END:
                self._release(payload)
            elif kind == _POLL:
                self._release(payload.call_id)
        self._events.clear()

    # reporting ----------------------------------------------------------------------------
    def _catch_up_events(self) -> None:
        """Write every skip and finished try the events file lacks (a first run: the skips;
        after a crash: the tries left unknown and any result written just before it)."""
        if self.events is None:
            return
        for contact in self.campaign.contacts:
            if contact.skip is not None and contact.row not in self.events.written_skips:
                self._emit(contact, None, None, {"result": "skipped", "reason": contact.skip})
        for record in self.ledger.tries():
            if record.state not in ("placing", "ringing") \
                    and record.call_id not in self.events.written_tries:
                self._emit_try(record, record.state)

    def _emit(self, contact: Contact, number: str | None, record: TryRecord | None,
              line: dict[str, Any]) -> None:
        if self.events is None:
            return
        doc: dict[str, Any] = {"contact": contact.row, "phone": contact.phone,
                               "caller_id": number}
        if record is not None:
            doc.update(call_id=record.call_id, try_no=record.try_no,
                       placed_at=record.placed_at, ended_at=record.ended_at)
        doc.update(line)
        self.events.write(doc)

    def _emit_try(self, record: TryRecord, result: str) -> None:
        contact = self._contacts[record.row]
        self._emit(contact, record.caller_id, record, {"result": result,
                                                       "reason": record.reason})

    def progress(self, now: float) -> Progress:
        statuses = self.ledger.statuses()
        for recent in self._recent.values():
            while recent and recent[0] <= now - HOUR_S:
                recent.popleft()
        waiting = sum(1 for due, row in self._due if due <= now and row not in self._outside)
        rate = self._rate_per_s(now)
        pending = statuses["pending"]
        eta = pending / rate if rate and pending else (0.0 if not pending else None)
        return Progress(now, len(self.campaign.contacts), statuses["placed"],
                        statuses["unknown"], statuses["skipped"], pending,
                        len(self._active) + len(self._inbox.calls), waiting, len(self._outside),
                        {n: len(d) for n, d in self._recent.items()}, self._holding, eta,
                        self._pacing.reason, self._pacing.summary())

    def _rate_per_s(self, now: float) -> float | None:
        if self._first_placed is None or now <= self._first_placed:
            return None
        span = min(now - self._first_placed, HOUR_S)
        return sum(len(d) for d in self._recent.values()) / span

    def _save_progress(self, now: float, *, running: bool = True) -> None:
        """The live view's numbers into the state file, for ``GET /v1/campaigns``."""
        wall = time.monotonic()
        if running and wall - self._last_saved < POLL_S:
            return
        self._last_saved = wall
        p = self.progress(now)
        with contextlib.suppress(Exception):  # the view is best effort; the ledger is not
            self.ledger.write_progress(now, {
                "running": running, "in_call": p.in_call, "waiting_window": p.waiting_window,
                "outside_hours": p.outside_hours, "per_number_last_hour":
                p.per_number_last_hour, "holding": p.holding, "eta_s": p.eta_s,
                "abandonment": p.abandonment})

    def _report(self, now: float) -> None:
        self._save_progress(now)
        if self.on_progress is None:
            return
        wall = time.monotonic()
        if wall - self._last_progress >= 0.2 or (not self._due and not self._active):
            self._last_progress = wall
            self.on_progress(self.progress(now))

    def _summary(self, started: float, finished: float) -> dict[str, Any]:
        statuses = self.ledger.statuses()
        placements = sum(self._placed_per_number.values())
        span = finished - started  # from the start to the end of the last call
        summary: dict[str, Any] = {
            "campaign": self.campaign.name,
            "run": self.ledger.run,
            "contacts": len(self.campaign.contacts),
            "placed": statuses["placed"],
            "unknown": statuses["unknown"],
            "skipped": statuses["skipped"],
            "pending": statuses["pending"],
            "skip_reasons": self.ledger.skip_reasons(),
            "tries_by_result": self.ledger.results(),
            "placements_this_run": placements,
            "placements_per_caller_id": dict(self._placed_per_number),
            "started_at": started,
            "finished_at": finished,
            "first_placed_at": self._first_placed,
            "last_placed_at": self._last_placed,
            "calls_per_hour": round(placements / span * HOUR_S, 1) if span > 0 else None,
            "held_back": dict(self._held_back),
            "paused": self._pacing.reason,
            "abandonment": self._pacing.summary(),
            "opted_out_this_run": self._opted_out,
            "dnc_write_error": self._dnc_error,
            "awaiting_results": len(self._inbox.calls),
        }
        if self.inbound is not None:
            summary["inbound"] = {
                "offered": self.inbound.offered,
                "admitted_at_once": self.inbound.admitted_at_once,
                "admitted_after_queue": self.inbound.admitted_after_queue,
                "refused": dict(self.inbound.refused),
            }
        return summary
