"""The Redis store: the distributed engine, for gates on many hosts.

Every step runs the one algorithm (:mod:`callgate.stores.kernel`) in the gate, against a
snapshot of Redis (:mod:`callgate.stores.redis_step`): one pipelined read round trip, the
decision in Python, then one call of a small generic guarded-apply script
(``stores/lua/apply.lua``) that checks the guards the decision relied on (a counter plus
its delta within its cap, a record or queue unchanged since the read) and makes every
write, or none. A failed guard means another gate changed what this step read: it reads
again and decides again (under the tag's step lock after :data:`OPTIMISTIC_ATTEMPTS`),
and after :data:`CONTENTION_BUDGET_S` answers :class:`StoreError` (the gate's
``on_store_error`` decision; never a cap exceeded). A
renew is one round trip of a tiny script (``lua/renew.lua``: while no call is queued,
the lease is still this call's and not due: move its expiry, which lives only in the
``due`` index, so no record is rewritten); otherwise it takes the full step. The
scripts are one Redis 7 function library (FUNCTION LOAD once, FCALL), or EVALSHA on a
cluster client or an older server; Redis 6.2 or later (``SET ... GET``, ``ZMSCORE``):
an older server is refused when the store is opened
(:func:`~callgate.stores.redis_options.check_version`). Redis is the attendant of the
kernel's petrol station, and every gate process is one more entrance to the same
forecourt.

**Keys.** Every key carries the hash tag of its *sharing domain*, so a step only ever
touches one cluster slot (the layout is listed in :mod:`callgate.stores.redis_step`). By
default the whole stack is one domain, ``{callgate}`` (``?prefix=`` renames it): atomic
across every layer, and Redis Cluster then gives failover rather than sharding. Redis's
one thread is the scarce resource of a whole fleet, so the work per decision is on the
gates, which scale out; ``bench/bench_redis.py`` measures what each operation costs Redis
(see the README's numbers). ``?sharing=account`` tags per account (``{callgate:acme}``)
to spread accounts over slots; it is refused unless the accounts share no trunk, provider
pool or resource (:func:`~callgate.stores.redis_options.check_sharing`).

**Limits.** Each gate decides under its own :class:`Limits` (the caps of the stack it
loaded), so every decision is taken under the caps of the gate that asks.
:meth:`RedisStore.configure` also writes them to ``<tag>limits`` (with a digest ``v``) so
an operator can see what the gates configured. Gates on different stacks sharing one
domain would each apply their own caps: give each stack its own ``prefix``.

**Time and clock skew.** Redis ``TIME`` is never read: the gate passes its own clock
(epoch seconds), so tests and the simulator control time. Gates on several hosts thus
judge with their own clocks, and a skew of ``d`` seconds between two hosts shifts what
they see by at most ``d``: a lease written by one expires up to ``d`` early or late as
judged by another; a queued caller's deadline and a cooldown move by up to ``d``; a
window's oldest event leaves it up to ``d`` early (so a window may admit, at its edge,
events that arrive within ``d`` of its period). Window events are kept 2 s past their
period, so the counts stay exact for clock disagreements under 2 s. Caps of concurrency
are never affected by skew: slots are counted, not timed. Leases are renewed every
``ttl/3``, so with ``d < ttl/3`` no gate ever expires a lease whose owner keeps renewing
it. Hosts on NTP are milliseconds apart: these bounds are far away.

**Failure.** A short socket timeout (``?timeout=0.5`` seconds by default), one immediate
reconnect, then :class:`~callgate.errors.StoreError`, which the gate turns into its
``on_store_error`` decision. When Redis is back, redis-py reconnects and the scripts are
reloaded when the server has lost them: no restart needed. A gate process that dies
leaks nothing for longer than one TTL: whichever process takes the next step expires its
leases (``expire()``, the service's reaper, does it too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from callgate.errors import ConfigError, ConfigIssue, StoreError
from callgate.stores import kernel
from callgate.stores.base import (
    Claim,
    Limits,
    Record,
    RenewOutcome,
    UsageSnapshot,
    Verdict,
)
from callgate.stores.codec import RECORD_FORMAT, encode_record
from callgate.stores.redis_options import Sharing, check_sharing, check_version, parse_url
from callgate.stores.redis_records import check_format, fmt, load_record, rid
from callgate.stores.redis_scripts import Scripts
from callgate.stores.redis_step import (
    LOCK_FIELD,
    LockHeld,
    Snapshot,
    StaleRead,
    apply_args,
    lock_live,
    lock_value,
)

__all__ = ["RedisStore", "check_sharing", "parse_url"]

_T = TypeVar("_T")
log = logging.getLogger("callgate.stores.redis")

def limits_fields(limits: Limits, accounts: Sequence[str]) -> list[str]:
    """What a gate configured, as field, value pairs ending with its digest ``v``.

    Written to ``<tag>limits`` for operators (``redis-cli HGETALL``); the steps use the
    gate's own :class:`Limits`, so every decision is taken under the caps of the gate that
    asks, as before.
    """
    fields: list[str] = []
    for key, cap in sorted(limits.caps.items()):
        fields += [f"c:{key}", str(int(cap))]
    for key, (limit, period) in sorted(limits.windows.items()):
        fields += [f"w:{key}", f"{int(limit)} {float(period)!r}"]
    fields += ["poll", fmt(limits.poll_timeout_s), "tomb", fmt(limits.tombstone_ttl_s),
               "ended", fmt(limits.ended_ttl_s), "accounts", json.dumps(list(accounts))]
    digest = hashlib.blake2b("\n".join(fields).encode(), digest_size=12).hexdigest()
    return [*fields, "v", digest]


OPTIMISTIC_ATTEMPTS = 4
CONTENTION_BUDGET_S = 5.0
LOCK_TTL_S = 2.0
"""How a step gets through when other gates keep changing what it relied on.

A guard fails only when another gate changed the same record, queue or counter between
this step's read and its apply (a few hundred microseconds), and the step then reads and
decides again. After :data:`OPTIMISTIC_ATTEMPTS` failures it takes the tag's step lock
(the field ``!lock`` of ``P used``, ``<token> <deadline>``, deadline 2 s on its clock,
set by an apply guarded on the value it read): while it is held every other gate's
step waits when it reads it (polling every 0.5-2 ms) and every apply read before fails
its guard, so the holder's next attempt goes through (its apply frees the lock). A
holder that dies holds it until its deadline: the next step frees it.
A step that has not got through after :data:`CONTENTION_BUDGET_S` seconds gives up with
:class:`StoreError` (as SQLite gives up after its busy timeout), which the gate turns
into its ``on_store_error`` decision: an explicit answer, never a cap exceeded and
nothing half-written.
"""


class _Usage:
    """Just enough of :class:`kernel.State` for :func:`kernel.usage` (windows counted in Redis)."""

    def __init__(self, limits: Limits, counts: dict[str, int]) -> None:
        self.limits = limits
        self._counts = counts

    def count_since(self, key: str, since: float) -> int:
        return self._counts.get(key, 0)


class RedisStore:
    """A store in Redis (or a Redis Cluster), shared by every gate process that uses it.

    Thread-safe: redis-py's client keeps a pool of connections, and each step has its own
    :class:`Snapshot`.
    """

    does_io = True

    def __init__(self, client: redis.Redis | RedisCluster, limits: Limits, *,
                 prefix: str = "callgate", sharing: Sharing = "stack",
                 where: str = "redis") -> None:
        self._client = client
        self._prefix = prefix
        self._sharing = sharing
        self._where = where
        self._scripts = Scripts(client)
        self._fields: dict[str, list[str]] = {}
        self._accounts: dict[str, tuple[str, ...]] = {}
        self._trunk_owner: dict[str, str] = {}
        self.conflicts = 0  # steps read again after a failed guard (for benchmarks)
        self._checked = False  # the server's version
        self.configure(limits)

    @classmethod
    def from_url(cls, url: str, limits: Limits) -> RedisStore:
        """A store for a ``redis://``, ``rediss://`` or ``redis+cluster://`` URL."""
        options = parse_url(url)
        common: dict[str, Any] = {
            "socket_timeout": options.timeout_s, "socket_connect_timeout": options.timeout_s,
            "retry": Retry(NoBackoff(), 1),
        }
        parts = urlsplit(options.url)
        shown = f"{parts.hostname}:{parts.port or 6379}"  # never the password
        try:
            client: redis.Redis | RedisCluster
            if options.cluster:
                client = RedisCluster.from_url(options.url, **common)
            else:
                client = redis.Redis.from_url(options.url, **common)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"cannot reach the Redis store at {shown}: {exc}") from exc
        return cls(client, limits, prefix=options.prefix, sharing=options.sharing, where=shown)

    # keys and steps --------------------------------------------------------------------------
    def _tag(self, account: str) -> str:
        if self._sharing == "account":
            return f"{{{self._prefix}:{account}}}:"
        return f"{{{self._prefix}}}:"

    def _tags(self) -> list[str]:
        """Every sharing domain's key prefix, in the order of the stack's accounts."""
        return list(self._fields)

    def digest(self, tag: str) -> str:
        """The digest of the limits this store wrote under ``tag``."""
        return self._fields[tag][-1]

    def _step(self, name: str, tag: str, now: float,
              decide: Callable[[Snapshot], _T]) -> _T:
        """Read, decide with the kernel, apply under guards; again on a failed guard."""
        lock = ""  # the step lock's value while this step holds it
        started = time.monotonic()
        deadline = started + CONTENTION_BUDGET_S
        attempt = failed = 0  # every read; the reads whose decision could not be applied
        used = f"{tag}used"
        try:
            while attempt == 0 or time.monotonic() < deadline:
                attempt += 1
                if failed >= OPTIMISTIC_ATTEMPTS and not lock:
                    lock = self._take_lock(tag, now + time.monotonic() - started)
                    if not lock:
                        time.sleep(random.uniform(0.0005, 0.002))  # another gate's turn
                        continue
                snap = Snapshot(self._client, tag, self._limits, self._accounts[tag], now,
                                lock, waited=time.monotonic() - started)
                try:
                    result = decide(snap)
                except LockHeld:  # another step's turn: wait, not a failure of this one
                    lock = ""  # (if this step held it, it expired and was taken)
                    time.sleep(random.uniform(0.0005, 0.002))
                    continue
                except StaleRead:
                    self.conflicts += 1
                    failed += 1
                    continue
                args = snap.changes()
                if args is None:
                    if lock:  # read only: free the lock if it is still ours
                        self._free_lock(tag, lock)
                        lock = ""
                    return result
                if self._scripts("apply", [used], args) == 1:
                    lock = ""  # the apply freed it
                    return result
                self.conflicts += 1
                failed += 1
                if lock and self._client.hget(used, LOCK_FIELD) != lock.encode():
                    lock = ""  # it expired and another step freed it: take it again
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed ({name}): {exc}") from exc
        finally:
            if lock:  # leaving without applying (an error, the budget): others' turn now
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    self._free_lock(tag, lock)
        raise StoreError(
            f"Redis store at {self._where}: {name} found its reads changed by other gates "
            f"for {CONTENTION_BUDGET_S:g} s ({attempt} attempts); nothing was taken")

    def _free_lock(self, tag: str, lock: str) -> None:
        """Free the step lock if it is still ``lock`` (this step's)."""
        used = f"{tag}used"
        self._scripts("apply", [used], apply_args(
            guards=[LOCK_FIELD, lock], ops=["3", "HDEL", used, LOCK_FIELD]))

    def _take_lock(self, tag: str, now: float) -> str:
        """The step lock's value once this step holds it; "" when another step does.

        ``now`` is the step's time plus how long it has been trying: the lock is a timer
        of real time, and a step's own time stands still while it retries."""
        used = f"{tag}used"
        read = cast(bytes | None, self._client.hget(used, LOCK_FIELD))
        was = read.decode() if read else ""
        if lock_live(was, now):
            return ""
        value = lock_value(secrets.token_hex(8), now + LOCK_TTL_S)
        taken = self._scripts("apply", [used], apply_args(
            guards=[LOCK_FIELD, was], ops=["4", "HSET", used, LOCK_FIELD, value]))
        return value if taken == 1 else ""

    def _check_version(self) -> None:
        """Refuse a server (any primary of a cluster) older than :data:`MIN_VERSION`; a
        user that may not run INFO (an ACL) is not checked: the scripts then say."""
        try:
            if isinstance(self._client, RedisCluster):
                info = self._client.info("server", target_nodes=RedisCluster.PRIMARIES)
            else:
                info = self._client.info("server")
        except ResponseError:
            return
        nodes = [info] if "redis_version" in info else list(info.values())
        check_version([str(n.get("redis_version", "")) for n in nodes], self._where)

    # the contract ------------------------------------------------------------------------------
    def configure(self, limits: Limits) -> None:
        """Use ``limits`` from now on; leases, queues and windows in Redis are kept."""
        accounts = list(limits.accounts) or ["-"]
        if self._sharing == "account" and len(accounts) > 1:
            shared = sorted(k for k in limits.caps if k.startswith(("provider:", "resource:")))
            if shared:
                raise ConfigError("gate.store", [ConfigIssue(
                    "gate.store", f"sharing=account ({self._where})",
                    f"{', '.join(shared)} would be shared by accounts {accounts}; "
                    "per-account tags need accounts that share no trunk, provider pool or "
                    "resource: use the default sharing=stack")])
            fields = {self._tag(a): limits_fields(limits, [a]) for a in accounts}
            self._accounts = {self._tag(a): (a,) for a in accounts}
        else:
            fields = {self._tag(accounts[0]): limits_fields(limits, accounts)}
            self._accounts = {self._tag(accounts[0]): tuple(limits.accounts)}
        self._limits = limits
        self._fields = fields
        self._trunk_owner = {}
        try:
            if not self._checked:
                self._check_version()
                self._checked = True
            for tag, values in fields.items():
                pipe = self._client.pipeline(transaction=False)
                pipe.get(f"{tag}format")
                pipe.exists(f"{tag}due", f"{tag}tombs")
                found, calls = pipe.execute()
                check_format(found, calls > 0, tag, self._where)
                pipe = self._client.pipeline(transaction=False)
                if found is None:
                    pipe.set(f"{tag}format", str(RECORD_FORMAT), nx=True)
                pipe.delete(f"{tag}limits")
                pipe.hset(f"{tag}limits", mapping=dict(zip(values[::2], values[1::2],
                                                           strict=True)))
                pipe.execute()
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed (configure): {exc}") from exc

    def acquire(self, claim: Claim, now: float) -> Verdict:
        if self._sharing == "account":
            self._check_trunks(claim)
        ident = rid(claim.account, claim.call_id)
        counts = claim.scopes()
        windows = claim.windows
        cooldowns = bool(claim.groups)

        def decide(snap: Snapshot) -> Verdict:
            snap.read((ident,), counts, windows, cooldowns)
            return kernel.acquire(snap, claim, now)

        return self._step("acquire", self._tag(claim.account), now, decide)

    def _check_trunks(self, claim: Claim) -> None:
        for slot in claim.slots:
            if slot.key.startswith("trunk:"):
                owner = self._trunk_owner.setdefault(slot.key, claim.account)
                if owner != claim.account:
                    raise StoreError(
                        f"gate.store sharing=account, but {slot.key} serves accounts "
                        f"{owner!r} and {claim.account!r}: its cap cannot be kept across "
                        "two hash tags; use the default sharing=stack")

    def _for_account(self, account: str | None) -> list[tuple[str, str | None]]:
        """(tag, account argument) pairs to try, in the order of the stack's accounts."""
        if account is not None:
            return [(self._tag(account), account)]
        if self._sharing == "account":
            return [(self._tag(a), a) for a in self._limits.accounts]
        return [(self._tags()[0], None)]

    def _ids(self, tag: str, account: str | None, call_id: str) -> list[str]:
        names = (account,) if account is not None else self._accounts[tag]
        return [rid(name, call_id) for name in names]

    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome:
        ttl = "" if ttl_s is None else fmt(ttl_s)
        first: RenewOutcome | None = None
        for tag, named in self._for_account(account):
            ids = self._ids(tag, named, call_id)
            try:
                shown = self._scripts("renew", [f"{tag}due"], [tag, fmt(now), ttl, *ids])
            except (RedisError, RedisClusterException, OSError) as exc:
                raise StoreError(
                    f"Redis store at {self._where} failed (renew): {exc}") from exc
            if shown:  # renewed in one round trip: the common case
                place, _, text = shown.partition(b":")
                record = load_record(ids[int(place) - 1], text)
                expires_at = kernel.renewed_expiry(record.ttl_s, record.max_end, now)
                return RenewOutcome("renewed", record.renewed(record.ttl_s, expires_at))

            def decide(snap: Snapshot, ids: list[str] = ids, named: str | None = named,
                       ) -> RenewOutcome:
                snap.read(ids, expiries=False)
                return kernel.renew(snap, named, call_id, ttl_s, now)

            outcome = self._step("renew", tag, now, decide)
            if outcome.status in ("renewed", "queued"):  # live first (base.py, rule 1)
                return outcome
            if outcome.status != "unknown":
                first = first or outcome
        return first or RenewOutcome("unknown")

    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
        for tag, named in self._for_account(account):
            ids = self._ids(tag, named, call_id)

            def decide(snap: Snapshot, ids: list[str] = ids, named: str | None = named,
                       ) -> tuple[bool, bool]:
                snap.read(ids, expiries=False)
                return kernel.release(snap, named, call_id, now)

            released, cancelled = self._step("release", tag, now, decide)
            if released or cancelled:
                return released, cancelled
        return False, False

    def tombstone(self, record: Record) -> None:
        tag = self._tag(record.account)
        ident = rid(record.account, record.call_id)
        args = apply_args(records=[f"{tag}r:{ident}", "", encode_record(record)],
                          ops=["4", "ZADD", f"{tag}tombs", fmt(record.until), ident])
        try:
            self._scripts("apply", [f"{tag}used"], args)  # a guard failure: it has a record
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed (tombstone): {exc}") from exc

    def cooldown(self, provider: str, alias: str, until: float) -> None:
        value = fmt(until)
        try:
            for tag in self._tags():
                self._client.hset(f"{tag}cool", f"provider:{provider}:{alias}", value)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed (cooldown): {exc}") from exc

    def clear_disabled(self, now: float) -> None:
        def decide(snap: Snapshot) -> None:
            snap.read(())
            snap.clear_cooldowns(now)
            kernel.promote(snap, now)

        for tag in self._tags():
            self._step("clear_disabled", tag, now, decide)

    def expire(self, now: float) -> int:
        def decide(snap: Snapshot) -> int:
            snap.read((), purge=True)
            return kernel.expire(snap, now)

        return sum(self._step("expire", tag, now, decide) for tag in self._tags())

    def usage(self, now: float) -> UsageSnapshot:
        limits = self._limits
        self.expire(now)
        in_use: dict[str, int] = {}
        cooldowns: dict[str, float] = {}
        counts: dict[str, int] = {}
        queue: list[Record] = []
        leases = 0
        try:
            for tag in self._tags():
                # One instant on a single Redis (MULTI: every key has the tag), so the
                # leases held (ZCARD due - ZCARD qpoll) are counted against one state; a
                # cluster client sends a plain pipeline (redis-py 5 has no cluster MULTI).
                pipe = self._client.pipeline(
                    transaction=not isinstance(self._client, RedisCluster))
                pipe.hgetall(f"{tag}used")
                pipe.hgetall(f"{tag}cool")
                pipe.smembers(f"{tag}qs")
                pipe.zcard(f"{tag}due")  # leases, queued calls, QUEUED while any are
                pipe.zcard(f"{tag}qpoll")  # queued calls
                for key, (_, period) in limits.windows.items():
                    pipe.zcount(f"{tag}w:{key}", "(" + fmt(now - period), "+inf")
                used, cool, numbers, live, queued, *window_counts = pipe.execute()
                for field, value in used.items():  # "#expired" rides along: kernel.usage
                    key = field.decode()
                    if not key.startswith("!"):  # the queues' version, the step lock
                        in_use[key] = in_use.get(key, 0) + int(value)
                leases += max(0, int(live) - int(queued) - (1 if queued else 0))
                for field, value in cool.items():
                    cooldowns[field.decode().removeprefix("provider:")] = float(value)
                for key, count in zip(limits.windows, window_counts, strict=True):
                    counts[key] = counts.get(key, 0) + int(count)
                for number in sorted(n.decode() for n in numbers):
                    members = cast(list[bytes], self._client.zrange(f"{tag}q:{number}", 0, -1))
                    ids = [m.decode()[16:] for m in members]
                    texts = cast(list[bytes | None],
                                 self._client.mget([f"{tag}r:{i}" for i in ids]) if ids else [])
                    queue += [load_record(i, t) for i, t in zip(ids, texts, strict=True) if t]
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed (usage): {exc}") from exc
        # kernel.usage reads only limits and count_since of its State: _Usage offers those.
        return kernel.usage(_Usage(limits, counts), now, in_use,  # type: ignore[arg-type]
                            list(cooldowns.items()), queue, leases)

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the node that holds our slot answers."""
        try:
            self._client.exists(f"{self._tags()[0]}limits")
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} is unreachable: {exc}") from exc

    def close(self) -> None:
        # The pools are disconnected here, not left to the client: redis-py's cluster
        # close() closes each node's client but not its pool, and in redis-py 5.0.0 (our
        # floor) a plain client's close() does not disconnect its pool either (the sockets
        # would stay open until garbage collection).
        if isinstance(self._client, RedisCluster):
            nodes = self._client.get_nodes()  # type: ignore[no-untyped-call]
            pools = [n.redis_connection.connection_pool for n in nodes if n.redis_connection]
        else:
            pools = [self._client.connection_pool]
        self._client.close()
        for pool in pools:
            pool.disconnect()
