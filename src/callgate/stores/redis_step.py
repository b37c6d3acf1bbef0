"""One step of the kernel over Redis: read a snapshot, decide in Python, apply under guards.

The Redis store runs the same algorithm as memory and SQLite (:mod:`callgate.stores.kernel`)
against a :class:`Snapshot`: a :class:`kernel.State` that reads what the step needs from
Redis (one pipelined round trip on the common path, more only when calls are queued,
something is due or an admission finds its call already a lease) and records every
change instead of writing it. :meth:`Snapshot.changes` then turns those changes into one
call of the generic guarded-apply script (``lua/apply.lua``), with the guards the
decision relied on:

- a *value* guard per counter the step raised: ``used + delta <= cap - reserve``. Two
  admissions that both fit never conflict; one that no longer fits fails the guard.
  A window raised gets the same guard on its count. A layer the kernel itself took past
  its cap (shadow mode) is not guarded: shadow mode admits whatever the count.
- a *version* guard per record the step read and changed (the exact bytes it read, or
  absent; checked and written in one command), and on the queues' version (the
  ``!qv`` field of ``P used``) when the step changed a queue.
- an *expiry* guard per lease the step expires: its expiry in ``P due`` is still the one
  read. A lease's expiry lives only there (the renew script moves it without touching
  the record), so a lease renewed after the read is never expired by a stale step.

A failed guard writes nothing; the store reads again and decides again (see
``RedisStore._step``). Records are the one codec's (:mod:`callgate.stores.codec`);
the renew script (``lua/renew.lua``) is the only Lua that reads one, and it writes none.

Keys, all under the sharing domain's hash tag ``P`` (one cluster slot):
``P r:<id>`` a record, ``P used`` counters (+ ``#expired``) and, read in the same
HMGET, ``!qv`` the queues' version (also the arrival sequence) and ``!lock`` the step
lock (see :data:`LOCK_FIELD`), ``P due`` leases by expiry (the only copy of a lease's
expiry) and queued calls by deadline, and the member :data:`QUEUED` while any call is
queued (so the renew script learns both in one ZMSCORE; the leases held are ``ZCARD due -
ZCARD qpoll``, less that member: no counter of them is kept), ``P tombs`` rejections and
ends by their until,
``P q:<number>`` a queue (score -priority, member ``%016d(seq)<id>``), ``P qs`` numbers
with a queue, ``P qpoll`` queued calls by last poll, ``P w:<key>`` a window's
admissions, ``P cool`` cooldowns,
``P limits`` what the gate configured (for operators), ``P format`` the record format
(:data:`~callgate.stores.codec.RECORD_FORMAT`) the tag's calls are kept in. ``<id>`` is
``<bytes of account>:<account>:<call id>``.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from bisect import insort
from collections.abc import Iterable, Sequence
from typing import Any

from callgate.stores.base import Claim, Limits, Record
from callgate.stores.codec import LEASE_MARK, encode_record
from callgate.stores.redis_records import fmt, load_record, rid

# Window events are kept this long past their period: gates read their clocks before their
# steps reach Redis, so a step may land after one whose clock was later; it still finds
# every event it must count while the gates' clocks disagree by less than this.
PRUNE_MARGIN_S = 2.0
# About one step in PRUNE_EVERY prunes a window it raised, and one in PRUNE_EVERY reads
# which rejections and ends are past their until to forget them (every reaper pass does):
# both only bound memory. A record past its until is gone to every lookup either way.
PRUNE_EVERY = 16
_LIVE = ("leased", "queued")
_GONE = ("rejected", "ended")
_MEMBER = f"{os.getpid()}-{os.urandom(4).hex()}-"  # window members: unique per process
_events = itertools.count()


Args = list[str | bytes]


def apply_args(counters: Sequence[str | bytes] = (), guards: Sequence[str | bytes] = (),
               windows: Sequence[str | bytes] = (), expiries: Sequence[str | bytes] = (),
               records: Sequence[str | bytes] = (), ops: Sequence[str | bytes] = ()) -> Args:
    """The guarded-apply script's arguments (``lua/apply.lua``): each section flat, e.g.
    ``counters`` as field, delta, bound, ...; ``ops`` already counted (argc, command, args)."""
    out: Args = []
    for section, width in ((counters, 3), (guards, 2), (windows, 4), (expiries, 3),
                           (records, 3)):
        out.append(str(len(section) // width))
        out += section
    out += ops
    return out


# In ``P due`` (score +inf, never due) while any call is queued; lua/renew.lua names it too.
QUEUED = "!q"
# The queues' version and the step lock are fields of ``P used``, read with the counters.
QV_FIELD = "!qv"
LOCK_FIELD = "!lock"
"""``<token> <deadline>``: held by the step with that token until the deadline (the
holder's clock, like every time callgate keeps in Redis), or until its apply frees it.
A step that reads it held by another stops there (:class:`LockHeld`); one that reads it
past its deadline guards on it and frees it. Clock skew moves only this timer: a gate
``d`` seconds behind the holder waits up to ``d`` longer for a dead holder's lock, one
more than 2 s ahead may free a live one early (its holder then reads again); no cap is
at stake, since every apply stays guarded."""


def lock_value(token: str, deadline: float) -> str:
    return f"{token} {fmt(deadline)}"


def lock_live(value: str, now: float) -> bool:
    """Whether the step lock ``value`` (as read; "" = free) is held at ``now``."""
    return bool(value) and float(value.rpartition(" ")[2]) > now


def _qmember(seq: int, ident: str) -> str:
    return f"{seq:016d}{ident}"


def _queue_order(record: Record) -> tuple[int, int]:
    return (-record.priority, record.seq)


class StaleRead(Exception):  # a signal inside the store, never raised out of it
    """The queues changed between two reads of one step: read again."""


class LockHeld(StaleRead):  # a signal inside the store, never raised out of it
    """Another gate's step holds the tag's step lock: wait, then read again."""


# the snapshot -----------------------------------------------------------------------------------
class Snapshot:
    """:class:`kernel.State` over one step's reads from Redis; writes are recorded, not made.

    ``client`` is the redis-py client (or cluster client); every key this step touches
    starts with ``tag``. ``accounts`` are the accounts whose records live under the tag,
    in config order (ordering rule 1). ``lock`` is the step lock's value when this step
    holds it (its apply then frees it); ``waited`` how long the step has been trying
    (the lock's deadline is compared with ``now + waited``: the step's time stands still
    while it retries).
    """

    def __init__(self, client: Any, tag: str, limits: Limits, accounts: Sequence[str],
                 now: float, lock: str = "", waited: float = 0.0) -> None:
        self.limits = limits
        self.accounts = tuple(accounts)
        self._client = client
        self._tag = tag
        self._now = now
        self._records: dict[str, Record | None] = {}
        self._orig: dict[str, bytes] = {}  # as read (absent: b"")
        self._read: dict[str, Record] = {}  # records as read (values: never changed)
        self._dirty: dict[str, Record] = {}
        self._counts: dict[str, int] = {}
        self._deltas: dict[str, int] = {}
        self._reserve: dict[str, int] = {}
        self._windows: dict[str, int] = {}  # counts since now - period, as read
        self._events: dict[str, int] = {}
        self._cool: dict[tuple[str, str], float] | None = None
        self._cool_cleared: list[str] = []
        self._due: list[str] = []
        self._due_scores: dict[str, float] = {}
        self._tombs_due: list[str] = []
        self._purged: dict[str, None] = {}  # ids to forget, in order
        self._qs: set[str] = set()
        self._queues: dict[str, list[Record]] = {}
        self._queue_changed: set[str] = set()
        self._qv = 0
        self._seq = 0
        self._lock = lock
        self._lock_read = ""
        self._waited = waited

    # reading --------------------------------------------------------------------------------
    def key(self, suffix: str) -> str:
        return self._tag + suffix

    def read(self, ids: Iterable[str], counts: Iterable[str] = (),
             windows: Iterable[str] = (), cooldowns: bool = False,
             expiries: bool = True, purge: bool | None = None) -> None:
        """The first read of a step, in one round trip: the records ``ids``, the counters
        ``counts``, the windows ``windows`` as the kernel will count them, what is due, the
        numbers with a queue and the queues' version; then whatever housekeeping and
        promotion need, if anything is due or queued.

        A lease among ``ids`` that is due has its expiry from the due read. Any other
        lease's expiry is read in a second round trip (rare: an admission that finds its
        call already admitted), or with ``expiries=False`` not at all, for a step that
        never answers with a lease it did not renew (a release, a renew): it is known not
        to be due, and kept as +inf (the step sets a new one, or does not use it).

        ``purge`` reads the rejections and ends past their until, for the step to forget
        (up to 1,000); None: in about one step in :data:`PRUNE_EVERY`.
        """
        now = self._now
        pipe = self._client.pipeline(transaction=False)
        ids = [i for i in dict.fromkeys(ids) if i not in self._orig]
        for ident in ids:
            pipe.get(self.key("r:" + ident))
        fields = [k for k in dict.fromkeys(counts) if k not in self._counts]
        pipe.hmget(self.key("used"), [*fields, QV_FIELD, LOCK_FIELD])
        specs = self.limits.windows
        wkeys = [k for k in dict.fromkeys(windows) if k in specs and k not in self._windows]
        for wkey in wkeys:
            pipe.zcount(self.key("w:" + wkey), "(" + fmt(now - specs[wkey][1]), "+inf")
        pipe.zrangebyscore(self.key("due"), "-inf", fmt(now), withscores=True)
        if purge is None:
            purge = random.random() < 1 / PRUNE_EVERY
        if purge:
            pipe.zrangebyscore(self.key("tombs"), "-inf", fmt(now), start=0, num=1000)
        pipe.smembers(self.key("qs"))
        if cooldowns:
            pipe.hgetall(self.key("cool"))
        replies = pipe.execute()
        at = len(ids)
        *values, qv, lock = replies[at]
        self._lock_read = lock.decode() if lock else ""
        if self._lock_read != self._lock and lock_live(self._lock_read, now + self._waited):
            raise LockHeld
        self._qv = int(qv or 0)
        for key, value in zip(fields, values, strict=True):
            self._counts[key] = int(value or 0)
        at += 1
        for wkey in wkeys:
            self._windows[wkey] = int(replies[at])
            at += 1
        due, *rest = replies[at:]
        tombs = rest.pop(0) if purge else []
        qs = rest[0]
        if cooldowns:
            self._set_cool(rest[1])
        self._due_scores = {d.decode(): float(score) for d, score in due}
        self._due = list(self._due_scores)
        scores = self._due_scores
        texts = replies[:len(ids)]
        if expiries:
            leases = [i for i, text in zip(ids, texts, strict=True)
                      if text and text[:1] == LEASE_MARK and i not in scores]
            if leases:
                pipe = self._client.pipeline(transaction=False)
                for ident in leases:
                    pipe.zscore(self.key("due"), ident)
                expiries_read = pipe.execute()
                if None in expiries_read:  # ended between the two reads: read again
                    raise StaleRead
                scores = scores | dict(zip(leases, expiries_read, strict=True))
        for ident, text in zip(ids, texts, strict=True):
            self._loaded(ident, text, scores.get(ident, math.inf))
        self._tombs_due = [t.decode() for t in tombs]
        self._qs = {q.decode() for q in qs}
        if self._due or self._qs:
            self._read_more()

    def _read_more(self) -> None:
        """Due records, every queue and its records, cooldowns: the second and third reads."""
        pipe = self._client.pipeline(transaction=False)
        due = [d for d in self._due if d not in self._orig]
        for ident in due:
            pipe.get(self.key("r:" + ident))
        numbers = sorted(self._qs)
        for number in numbers:
            pipe.zrange(self.key("q:" + number), 0, -1)
        pipe.hget(self.key("used"), QV_FIELD)
        cooldowns = self._cool is None  # unless the first read had them
        if cooldowns:
            pipe.hgetall(self.key("cool"))
        replies = pipe.execute()
        for ident, text in zip(due, replies, strict=False):
            self._loaded(ident, text, self._due_scores[ident])
        at = len(due)
        members: dict[str, list[str]] = {}
        for number in numbers:
            members[number] = [m.decode()[16:] for m in replies[at]]
            at += 1
        if int(replies[at] or 0) != self._qv:
            raise StaleRead
        if cooldowns:
            self._set_cool(replies[at + 1])
        wanted = [i for ids in members.values() for i in ids if i not in self._orig]
        if wanted:
            texts = self._client.mget([self.key("r:" + i) for i in wanted])
            for ident, text in zip(wanted, texts, strict=True):
                self._loaded(ident, text)
        keys: set[str] = set()
        for number, ids in members.items():
            entries = [r for r in (self._records.get(i) for i in ids)
                       if r is not None and r.state == "queued"]
            entries.sort(key=_queue_order)
            if entries:
                self._queues[number] = entries
            for entry in entries:
                if entry.claim is not None:
                    keys.update(entry.claim.scopes())
        for ident in self._due:
            record = self._records.get(ident)
            if record is not None:
                keys |= {key for key, _ in record.held}
        self._fetch_counts(keys)

    def _loaded(self, ident: str, text: bytes | None, expiry: float | None = None) -> None:
        """Keep the record ``ident`` as read (``text``), a live one with its score in P due."""
        self._orig[ident] = text or b""
        if text:
            record = load_record(ident, text, expiry)
            self._records[ident] = self._read[ident] = record
        else:
            self._records[ident] = None

    def _set_cool(self, flat: dict[bytes, bytes]) -> None:
        cool: dict[tuple[str, str], float] = {}
        for field, value in flat.items():
            provider, _, alias = field.decode().removeprefix("provider:").rpartition(":")
            cool[(provider, alias)] = float(value)
        self._cool = cool

    def _fetch_counts(self, keys: Iterable[str]) -> None:
        fields = [k for k in keys if k not in self._counts]
        if fields:
            values = self._client.hmget(self.key("used"), fields)
            for key, value in zip(fields, values, strict=True):
                self._counts[key] = int(value or 0)

    # kernel.State ---------------------------------------------------------------------------
    def _get_one(self, ident: str) -> Record | None:
        if ident not in self._orig:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(self.key("r:" + ident))
            pipe.zscore(self.key("due"), ident)
            self._loaded(ident, *pipe.execute())
        record = self._records[ident]
        # A rejection or end past its until is gone to every lookup (ordering rule 1):
        # this step forgets it (a later step, or a final rejection, may write the id).
        if record is not None and record.state in _GONE and record.until <= self._now:
            self._purged.setdefault(ident)
            return None
        return record

    def get(self, account: str | None, call_id: str) -> Record | None:
        if account is not None:
            return self._get_one(rid(account, call_id))
        first = None
        for name in self.accounts:
            record = self._get_one(rid(name, call_id))
            if record is not None:
                if record.state in _LIVE:
                    return record
                first = first or record
        return first

    def put(self, record: Record) -> None:
        ident = rid(record.account, record.call_id)
        before = self._records.get(ident)  # what this replaces (records are values)
        previous = before.state if before is not None else None
        state = record.state
        if previous == "queued" and state != "queued":
            entries = self._queues.get(record.number, [])
            entries[:] = [e for e in entries if e is not before]
            if not entries:
                self._queues.pop(record.number, None)
            self._queue_changed.add(record.number)
        if state == "queued":
            entries = self._queues.setdefault(record.number, [])
            if previous == "queued":  # polled: the same place in the queue
                at = next(i for i, e in enumerate(entries) if e is before)
                entries[at] = record
            else:
                insort(entries, record, key=_queue_order)
                self._queue_changed.add(record.number)
        self._records[ident] = record
        self._dirty[ident] = record

    def in_use(self, key: str) -> int:
        if key not in self._counts:
            self._fetch_counts((key,))
        return self._counts[key] + self._deltas.get(key, 0)

    def add(self, key: str, delta: int) -> None:
        self._deltas[key] = self._deltas.get(key, 0) + delta

    def need_room(self, claim: Claim) -> None:
        """The kernel's hook for stores that apply under value guards: the reserve each
        slot of a claim it takes must leave free (kernel.take)."""
        reserve = self._reserve
        for slot in claim.slots:
            if slot.reserve > reserve.get(slot.key, 0):
                reserve[slot.key] = slot.reserve

    def count_since(self, key: str, since: float) -> int:
        spec = self.limits.windows.get(key)
        if spec is None or since != self._now - spec[1] or key not in self._windows:
            count = int(self._client.zcount(self.key("w:" + key), "(" + fmt(since), "+inf"))
            if spec is not None and since == self._now - spec[1]:
                self._windows[key] = count
        else:
            count = self._windows[key]
        # This step's own events are at now, inside every window that counts.
        return count + self._events.get(key, 0)

    def nth_since(self, key: str, since: float, n: int) -> float:
        rows = self._client.zrangebyscore(self.key("w:" + key), "(" + fmt(since), "+inf",
                                          start=n, num=1, withscores=True)
        return float(rows[0][1]) if rows else self._now

    def log_event(self, key: str, at: float) -> None:
        self._events[key] = self._events.get(key, 0) + 1

    def cooldown_until(self, provider: str, alias: str) -> float | None:
        if self._cool is None:
            self._set_cool(self._client.hgetall(self.key("cool")))
        assert self._cool is not None
        return self._cool.get((provider, alias)) if self._cool else None

    def clear_cooldowns(self, now: float) -> None:
        """Forget disabled keys and cooldowns that are over (a reload)."""
        if self._cool is None:
            self._set_cool(self._client.hgetall(self.key("cool")))
        assert self._cool is not None
        for (provider, alias), until in list(self._cool.items()):
            if math.isinf(until) or until <= now:
                del self._cool[(provider, alias)]
                self._cool_cleared.append(f"provider:{provider}:{alias}")

    def settle(self, now: float) -> bool:
        """Nothing due and no call queued: the kernel may skip housekeeping (kernel.Settling)."""
        if self._tombs_due:
            self.purge(now)
        return not self._due and not self._qs

    def add_held(self, held: Iterable[tuple[str, int]], sign: int) -> None:
        deltas = self._deltas
        for key, units in held:
            deltas[key] = deltas.get(key, 0) + sign * units

    def due_leases(self, now: float) -> list[Record]:
        due = []
        for ident in self._due:
            record = self._records.get(ident)
            if record is not None and record.state == "leased" and record.expires_at <= now:
                due.append(record)
        return due

    def due_queued(self, now: float) -> list[Record]:
        poll = self.limits.poll_timeout_s
        return [r for entries in self._queues.values() for r in entries
                if r.deadline <= now or r.last_poll + poll <= now]

    def purge(self, now: float) -> None:
        for ident in self._tombs_due:
            if ident not in self._dirty:
                self._purged.setdefault(ident)

    def queue_heads(self) -> list[Record]:
        return [entries[0] for entries in self._queues.values()]

    def any_queued(self) -> bool:
        return bool(self._qs)

    def queue_of(self, number: str) -> list[Record]:
        return list(self._queues.get(number, ()))

    def next_seq(self) -> int:
        self._seq += 1
        return self._qv + self._seq

    # applying -------------------------------------------------------------------------------
    def changes(self) -> list[str | bytes] | None:
        """The guarded-apply script's arguments for what this step changed (None: nothing).

        Every apply is guarded on the tag's step lock (:data:`LOCK_FIELD`) being as read:
        free, held by this step (the apply frees it) or past its deadline (the apply
        frees it); see ``RedisStore._step``.
        """
        k = self.key
        now = self._now
        ops: Args = []
        guards: Args = []
        expiries: Args = []
        records: Args = []

        def op(*args: str | bytes) -> None:
            ops.append(str(len(args)))
            ops.extend(args)

        deltas = {key: d for key, d in self._deltas.items() if d}
        for ident, record in self._dirty.items():
            read = self._read.get(ident)
            before, state = (read.state if read else None), record.state
            records += [k("r:" + ident), self._orig.get(ident, b""), encode_record(record)]
            if before in _GONE and state not in _GONE:
                op("ZREM", k("tombs"), ident)
            if state == "leased":
                if math.isinf(record.expires_at):  # read without its expiry and not renewed
                    raise RuntimeError(f"lease {ident} would be written with no expiry")
                op("ZADD", k("due"), fmt(record.expires_at), ident)
            elif state == "queued":
                op("ZADD", k("due"), fmt(record.deadline), ident)
                op("ZADD", k("qpoll"), fmt(record.last_poll), ident)
            else:
                op("ZADD", k("tombs"), fmt(record.until), ident)
                if before in _LIVE:
                    op("ZREM", k("due"), ident)
                if read is not None and before == "leased" and record.ended_by == "expired":
                    expiries += [k("due"), ident, fmt(read.expires_at)]  # as read
            if before == "queued" and state != "queued":
                op("ZREM", k("q:" + record.number), _qmember(read.seq if read else 0, ident))
                op("ZREM", k("qpoll"), ident)
            if state == "queued" and before != "queued":
                op("ZADD", k("q:" + record.number), str(-record.priority),
                   _qmember(record.seq, ident))
        queued = set(self._qs)  # exact: a step that changes a queue guards its version
        for number in sorted(self._queue_changed):
            if number in self._queues and number not in self._qs:
                op("SADD", k("qs"), number)
                queued.add(number)
            elif number not in self._queues and number in self._qs:
                op("SREM", k("qs"), number)
                queued.discard(number)
        if queued and not self._qs:
            op("ZADD", k("due"), "inf", QUEUED)
        elif self._qs and not queued:
            op("ZREM", k("due"), QUEUED)
        purged = [ident for ident in self._purged if ident not in self._dirty]
        if purged:
            op("PURGE", k("tombs"), fmt(now), *purged, *(k("r:" + i) for i in purged))
        for field in self._cool_cleared:
            op("HDEL", k("cool"), field)
        windows: Args = []
        specs = self.limits.windows
        for wkey, added in self._events.items():
            spec = specs.get(wkey)
            zkey = k("w:" + wkey)
            for _ in range(added):
                op("ZADD", zkey, fmt(now), _MEMBER + str(next(_events)))
            if spec is None:
                continue
            limit, period = spec
            # Events older than the window are never counted (every count is a ZCOUNT
            # from now - period), so pruning them only bounds memory: about one step in
            # PRUNE_EVERY does it, leaving a few dozen old events at most.
            if random.random() < 1 / PRUNE_EVERY:
                op("ZREMRANGEBYSCORE", zkey, "-inf", fmt(now - period - PRUNE_MARGIN_S))
            # Guarded unless the kernel itself went past the limit (shadow mode).
            if self._windows.get(wkey, 0) + added <= limit:
                windows += [zkey, "(" + fmt(now - period), str(added), str(limit)]
        if not ops and not deltas:
            return None
        guards += [LOCK_FIELD, self._lock_read]
        if self._lock_read:
            op("HDEL", k("used"), LOCK_FIELD)
        # Only a step that changes a queue guards the queues' version. One that only read
        # them (a heartbeat or an admission while calls wait) is ordered before any
        # concurrent queue change: it only took room (value-guarded) or moved its own
        # record (version-guarded), so a caller queued meanwhile is still blocked after it.
        if self._queue_changed:
            guards += [QV_FIELD, str(self._qv) if self._qv else ""]
            op("HSET", k("used"), QV_FIELD, str(self._qv + max(1, self._seq)))
        counters: Args = []
        caps = self.limits.caps
        for key, delta in deltas.items():
            bound = ""
            cap = caps.get(key)
            if delta > 0 and cap is not None:
                room = cap - self._reserve.get(key, 0)
                if self._counts.get(key, 0) + delta <= room:
                    bound = str(room)
            counters += [key, str(delta), bound]
        return apply_args(counters, guards, windows, expiries, records, ops)
