"""The Redis store: the distributed engine, for gates on many hosts.

Every primitive of :mod:`callgate.stores.base` is one Lua script (``stores/lua/*.lua``,
each prefixed with ``common.lua``, the algorithm of :mod:`callgate.stores.kernel`),
loaded once and run with EVALSHA (reloaded on NOSCRIPT): one round trip per decision,
atomic because Redis runs one script at a time. Redis is the attendant of the kernel's
petrol station, and every gate process is one more entrance to the same forecourt.

**Keys.** Every key carries the hash tag of its *sharing domain*, so a script only ever
touches one cluster slot (the layout is drawn at the top of ``common.lua``): records
``{callgate}:r:<id>`` (MessagePack), counters ``{callgate}:used``, one ``due`` index of
expiries, deadlines and tombstones, a queue per number, a sorted set per window. By
default the whole stack is one domain, ``{callgate}`` (``?prefix=`` renames it): atomic
across every layer, and Redis Cluster then gives failover rather than sharding. Redis
spends about 40-80 us of its one thread per decision (measured on a shared 2-core
machine with ``bench/bench_redis.py``, example stack, 9 scopes per call), so one slot
carries roughly 12,000-25,000 decisions per second: far above any call rate (a decision
per call start and end). ``?sharing=account`` tags per account (``{callgate:acme}``) to
spread accounts over slots; it is refused unless the accounts share no trunk, provider
pool or resource (:func:`check_sharing`).

**How the caps reach the scripts.** :meth:`RedisStore.configure` writes the Limits into
two hashes per domain: ``<tag>caps`` (each key's cap, each window's "limit period") and
``<tag>limits`` (timers, accounts, and a digest of all of it). Promotion needs the caps
of every queued head, not just the claim's, which is why they live in Redis and not in
each call's arguments. Every script is passed the digest of the limits its own gate
configured and answers ``CALLGATE_STALE`` when Redis holds other ones (Redis restarted
empty, or another gate configured another stack): the gate rewrites them and runs the
script again, so every decision is taken under the caps of the gate that asks. Gates
on different stacks sharing one domain would rewrite the limits back and forth: give
each stack its own ``prefix``.

**Time and clock skew.** Scripts never read Redis ``TIME``: the gate passes its own clock
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
``on_store_error`` decision. When Redis is back, redis-py reconnects, scripts are
reloaded on NOSCRIPT and the limits rewritten on ``CALLGATE_STALE``: no restart needed.
A gate process that dies leaks nothing for longer than one TTL: whichever process runs
the next script expires its leases (``expire()``, the service's reaper, does it too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from callgate.config import Stack
from callgate.errors import ConfigError, ConfigIssue, StoreError
from callgate.model import Reason
from callgate.stores import kernel
from callgate.stores.base import (
    Blocker,
    Claim,
    KeyGroup,
    Limits,
    QueuePolicy,
    Record,
    RenewOutcome,
    SlotNeed,
    UsageSnapshot,
    Verdict,
    VerdictKind,
)

log = logging.getLogger("callgate.stores.redis")

SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
PRIMITIVES = ("acquire", "renew", "release", "tombstone", "cooldown", "clear_disabled",
              "expire", "usage")
Sharing = Literal["stack", "account"]
RenewStatus = Literal["renewed", "expired", "ended", "queued"]
_STALE = "CALLGATE_STALE"
_FLOATS = ("at", "e", "m", "t", "eq", "dl", "lp", "u", "ra")


# the URL ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisOptions:
    """What a store URL says: where Redis is, and callgate's own query parameters."""

    url: str  # for redis-py, without callgate's parameters
    cluster: bool
    timeout_s: float = 0.5
    prefix: str = "callgate"
    sharing: Sharing = "stack"


def parse_url(url: str) -> RedisOptions:
    """``redis://[:password@]host:port/db``, ``rediss://``, ``redis+cluster://host:port``.

    callgate's query parameters: ``timeout`` (socket timeout in seconds, default 0.5),
    ``prefix`` (the hash tag's name, default ``callgate``), ``sharing`` (``stack`` or
    ``account``); any other parameter goes to redis-py.
    """
    if not url.startswith(SCHEMES):
        raise ValueError(f"not a Redis store URL: {url!r}; accepted: " + ", ".join(SCHEMES))
    parts = urlsplit(url)
    cluster = parts.scheme.endswith("+cluster")
    scheme = parts.scheme.removesuffix("+cluster")
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (own.__setitem__(name, value) if name in ("timeout", "prefix", "sharing")
         else rest.append((name, value)))
    timeout = own.get("timeout", "0.5")
    try:
        timeout_s = float(timeout)
    except ValueError:
        timeout_s = math.nan
    if not (0 < timeout_s < 3600):
        raise ValueError(f"store URL timeout={timeout!r}: expected seconds > 0, e.g. 0.5")
    prefix = own.get("prefix", "callgate")
    if not prefix or any(ch in prefix for ch in "{}"):
        raise ValueError(f"store URL prefix={prefix!r}: expected a non-empty name without "
                         "braces, e.g. callgate")
    sharing = own.get("sharing", "stack")
    if sharing not in ("stack", "account"):
        raise ValueError(f"store URL sharing={sharing!r}: expected 'stack' (one hash tag for "
                         "the whole stack) or 'account' (one per account)")
    plain = urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return RedisOptions(plain, cluster, timeout_s, prefix, cast(Sharing, sharing))


def wants_account_sharing(url: str) -> bool:
    return url.startswith(SCHEMES) and parse_url(url).sharing == "account"


def sharing_issues(stack: Stack) -> list[ConfigIssue]:
    """Why ``stack`` cannot tag per account: trunks, pools or resources used by two accounts."""
    if len(stack.accounts) < 2:
        return []
    issues = []
    owners: dict[str, set[str]] = {}
    for spec in stack.numbers.values():
        owners.setdefault(spec.trunk, set()).add(spec.account)
    for trunk, accounts in sorted(owners.items()):
        if len(accounts) > 1:
            issues.append(ConfigIssue(
                f"trunks.{trunk}", sorted(accounts),
                "sharing=account needs each trunk used by one account only; use the "
                "default sharing=stack, or give each account its own trunk"))
    for kind, names in (("providers", stack.providers), ("resources", stack.resources)):
        for name in names:
            issues.append(ConfigIssue(
                f"{kind}.{name}", sorted(stack.accounts),
                f"sharing=account needs accounts that share no provider pool or resource; "
                f"{kind}.{name} serves every account: use the default sharing=stack"))
    return issues


def check_sharing(stack: Stack) -> None:
    """Raise :class:`ConfigError` if the stack's store asks for per-account tags it cannot use.

    ``callgate serve`` (or any code that builds a gate on a Redis store with
    ``?sharing=account``) should call this once after loading the stack; the store checks
    what it can see of the stack (pools, resources) itself.
    """
    if wants_account_sharing(stack.gate.store):
        issues = sharing_issues(stack)
        if issues:
            raise ConfigError(f"gate.store = {stack.gate.store!r}", issues)


# scripts --------------------------------------------------------------------------------------
def _source(name: str) -> str:
    return (resources.files("callgate.stores") / "lua" / f"{name}.lua").read_text("utf-8")


def script_sources() -> dict[str, str]:
    """The text Redis sees for each primitive (the prelude, then the primitive)."""
    prelude = _source("common")
    sources = {name: f"{prelude}\n{_source(name)}" for name in PRIMITIVES}
    sources["configure"] = _source("configure")
    return sources


# encoding ---------------------------------------------------------------------------------------
_ROUTES: dict[int, tuple[object, object, object, str]] = {}


def _route_json(claim: Claim) -> str:
    """The JSON of a claim's slots, groups and windows; cached per route (the gate's tuples)."""
    entry = _ROUTES.get(id(claim.slots))
    if entry is not None and entry[0] is claim.slots and entry[1] is claim.groups and (
            entry[2] is claim.windows):
        return entry[3]
    keys = [s.key for s in claim.slots]
    for g in claim.groups:
        keys += [g.pool_key, *(g.key_slot(a) for a in g.keys)]
    text = json.dumps({
        "s": [[s.key, s.units, s.reserve] for s in claim.slots],
        "g": [[g.provider, g.pool_key, list(g.keys), [g.key_slot(a) for a in g.keys]]
              for g in claim.groups],
        "w": list(claim.windows),
        "k": list(dict.fromkeys(keys)),
    }, separators=(",", ":"))[1:-1]
    if len(_ROUTES) > 10_000:  # stacks change on reload; never let the cache grow unbounded
        _ROUTES.clear()
    _ROUTES[id(claim.slots)] = (claim.slots, claim.groups, claim.windows, text)
    return text


def claim_json(claim: Claim) -> str:
    """A claim as the scripts read it (and as a queued record keeps it)."""
    a, i, n, d, f = (json.dumps(v) for v in (claim.account, claim.call_id, claim.number,
                                              claim.direction, claim.fingerprint))
    queue = "" if claim.queue is None else (
        f',"q":[{claim.queue.queue_max},{claim.queue.max_wait_s!r}]')
    first = f',"T":{claim.first_ttl_s!r}' if claim.first_ttl_s else ""
    return (f'{{"a":{a},"i":{i},"n":{n},"d":{d},"f":{f},"p":{claim.priority},'
            f'"t":{claim.ttl_s!r},"x":{claim.max_duration_s!r},'
            f'"F":{"true" if claim.force else "false"}{queue}{first},{_route_json(claim)}}}')


def load_claim(text: str) -> Claim:
    data = json.loads(text)
    queue = data.get("q")
    return Claim(
        account=data["a"], call_id=data["i"], number=data["n"], direction=data["d"],
        priority=int(data["p"]), fingerprint=data["f"],
        slots=tuple(SlotNeed(k, int(u), int(r)) for k, u, r in data["s"]),
        groups=tuple(KeyGroup(g[0], tuple(g[2])) for g in data["g"]),
        windows=tuple(data["w"]), ttl_s=float(data["t"]), max_duration_s=float(data["x"]),
        queue=QueuePolicy(int(queue[0]), float(queue[1])) if queue else None,
        force=bool(data["F"]), first_ttl_s=float(data.get("T", 0.0)),
    )


def split_id(ident: bytes) -> tuple[str, str]:
    """(account, call id) of a record id ``<bytes of account>:<account>:<call id>``."""
    length, _, rest = ident.partition(b":")
    size = int(length)
    return rest[:size].decode(), rest[size + 1:].decode()


def load_record(ident: bytes, packed: bytes) -> Record:
    """A record as the scripts store it (MessagePack, short names; see ``common.lua``)."""
    d: dict[str, Any] = msgpack.unpackb(packed)
    account, call_id = split_id(ident)
    record = Record(account=account, call_id=call_id, state=d["s"], fingerprint=d["f"],
                    number=d["n"], direction=d["d"], priority=int(d.get("p", 0)))
    held = d.get("h")
    if held:
        record.held, record.keys = _held(held)
    get = d.get
    record.admitted_at = float(get("at", 0.0))
    record.expires_at = float(get("e", 0.0))
    record.max_end = float(get("m", 0.0))
    record.ttl_s = float(get("t", 0.0))
    record.promoted = bool(get("pr", False))
    if "c" in d:
        record.claim = load_claim(d["c"])
        record.seq = int(d["q"])
        record.enqueued_at = float(d["eq"])
        record.deadline = float(d["dl"])
        record.last_poll = float(d["lp"])
    record.until = float(get("u", 0.0))
    if get("r"):
        record.reason = Reason(d["r"])
    record.blocker_key = get("b")
    if "ra" in d:
        record.retry_after_s = float(d["ra"])
    record.ended_by = get("eb", "")
    return record


def _held(compact: list[Any]) -> tuple[tuple[tuple[str, int], ...], dict[str, str]]:
    """The kernel's ``held`` and ``keys`` from a record's compact list (see ``common.lua``)."""
    held: list[tuple[str, int]] = []
    keys: dict[str, str] = {}
    for entry in compact:
        key, units = (entry, 1) if isinstance(entry, str) else (entry[0], int(entry[1]))
        if key.startswith("provider:"):
            pool, _, alias = key.rpartition(":")
            keys[pool.removeprefix("provider:")] = alias
            held.append((pool, 1))
        held.append((key, units))
    return tuple(held), keys


def dump_record(record: Record) -> str:
    """A rejected or ended record in the scripts' format (for :meth:`RedisStore.tombstone`)."""
    data: dict[str, Any] = {"a": record.account, "i": record.call_id, "s": record.state,
                            "f": record.fingerprint, "n": record.number,
                            "d": record.direction, "p": record.priority,
                            "u": repr(float(record.until))}
    if record.reason is not None:
        data["r"] = str(record.reason)
    if record.blocker_key is not None:
        data["b"] = record.blocker_key
    if record.retry_after_s is not None:
        data["ra"] = repr(float(record.retry_after_s))
    if record.ended_by:
        data["eb"] = record.ended_by
    return json.dumps(data, separators=(",", ":"))


def _verdict(reply: list[Any]) -> Verdict:
    kind, position, replay, shown, flat = reply
    blockers = tuple(
        Blocker(flat[i].decode(), Reason(flat[i + 1].decode()),
                float(flat[i + 2]) if flat[i + 2] else None)
        for i in range(0, len(flat), 3)
    )
    record = load_record(*shown) if shown else None
    return Verdict(VerdictKind(kind.decode()), record, blockers, int(position), bool(replay))


def _time(now: float) -> str:
    return repr(float(now))


def limits_fields(limits: Limits, accounts: Sequence[str]) -> list[str]:
    """The limits hash as field, value pairs, ending with its digest ``v``."""
    others = {a for a in limits.accounts if a not in accounts}
    foreign = tuple(f"account:{a}" for a in others) + tuple(f"window:account:{a}:" for a in others)
    fields: list[str] = []
    for key, cap in sorted(limits.caps.items()):
        if not key.startswith(foreign) or not others:
            fields += [f"c:{key}", str(int(cap))]
    for key, (limit, period) in sorted(limits.windows.items()):
        if not key.startswith(foreign) or not others:
            fields += [f"w:{key}", f"{int(limit)} {float(period)!r}"]
    fields += ["poll", _time(limits.poll_timeout_s), "tomb", _time(limits.tombstone_ttl_s),
               "ended", _time(limits.ended_ttl_s), "accounts", json.dumps(list(accounts))]
    digest = hashlib.blake2b("\n".join(fields).encode(), digest_size=12).hexdigest()
    return [*fields, "v", digest]


# the store ----------------------------------------------------------------------------------------
class _Usage:
    """Just enough of :class:`kernel.State` for :func:`kernel.usage` (windows counted in Redis)."""

    def __init__(self, limits: Limits, counts: dict[str, int]) -> None:
        self.limits = limits
        self._counts = counts

    def count_since(self, key: str, since: float) -> int:
        return self._counts.get(key, 0)


class RedisStore:
    """A store in Redis (or a Redis Cluster), shared by every gate process that uses it.

    Thread-safe: redis-py's client keeps a pool of connections.
    """

    def __init__(self, client: redis.Redis | RedisCluster, limits: Limits, *,
                 prefix: str = "callgate", sharing: Sharing = "stack",
                 where: str = "redis") -> None:
        self._client = client
        self._prefix = prefix
        self._sharing = sharing
        self._where = where
        self._scripts: dict[str, Script] = {
            name: client.register_script(text) for name, text in script_sources().items()
        }
        self._fields: dict[str, list[str]] = {}
        self._trunk_owner: dict[str, str] = {}
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

    # keys and calls ------------------------------------------------------------------------
    def _tag(self, account: str) -> str:
        if self._sharing == "account":
            return f"{{{self._prefix}:{account}}}:"
        return f"{{{self._prefix}}}:"

    def _tags(self) -> list[str]:
        """Every sharing domain's key prefix, in the order of the stack's accounts."""
        return list(self._fields)

    def digest(self, tag: str) -> str:
        """The digest of the limits this store wrote under ``tag`` (scripts check it)."""
        return self._fields[tag][-1]

    def _call(self, name: str, tag: str, now: float, *args: str) -> Any:
        fields = self._fields[tag]
        argv = [tag, fields[-1], _time(now), *args]
        keys = [f"{tag}limits"]
        try:
            try:
                return self._scripts[name](keys=keys, args=argv)
            except ResponseError as exc:
                if _STALE not in str(exc):
                    raise
                log.warning("Redis limits under %s were missing or another gate's: rewriting", tag)
                self._write(tag)
                return self._scripts[name](keys=keys, args=argv)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed ({name}): {exc}") from exc

    def _write(self, tag: str) -> None:
        self._scripts["configure"](keys=[f"{tag}limits"],
                                   args=[tag, "", "0", *self._fields[tag]])

    # the contract ------------------------------------------------------------------------------
    def configure(self, limits: Limits) -> None:
        """Write ``limits`` for every sharing domain; leases, queues and windows are kept."""
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
        else:
            fields = {self._tag(accounts[0]): limits_fields(limits, accounts)}
        self._limits = limits
        self._fields = fields
        self._trunk_owner = {}
        try:
            for tag in fields:
                self._write(tag)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store at {self._where} failed (configure): {exc}") from exc

    def acquire(self, claim: Claim, now: float) -> Verdict:
        if self._sharing == "account":
            self._check_trunks(claim)
        reply = self._call("acquire", self._tag(claim.account), now, claim_json(claim))
        return _verdict(reply)

    def _check_trunks(self, claim: Claim) -> None:
        for slot in claim.slots:
            if slot.key.startswith("trunk:"):
                owner = self._trunk_owner.setdefault(slot.key, claim.account)
                if owner != claim.account:
                    raise StoreError(
                        f"gate.store sharing=account, but {slot.key} serves accounts "
                        f"{owner!r} and {claim.account!r}: its cap cannot be kept across "
                        "two hash tags; use the default sharing=stack")

    def _for_account(self, account: str | None) -> list[tuple[str, list[str]]]:
        """(tag, account argument) pairs to try, in the order of the stack's accounts."""
        if account is not None:
            return [(self._tag(account), [account])]
        if self._sharing == "account":
            return [(self._tag(a), [a]) for a in self._limits.accounts]
        return [(self._tags()[0], [])]

    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome:
        ttl = "" if ttl_s is None else _time(ttl_s)
        first: RenewOutcome | None = None
        for tag, named in self._for_account(account):
            status, shown = self._call("renew", tag, now, call_id, ttl, *named)
            if status == b"unknown":
                continue
            outcome = RenewOutcome(cast(RenewStatus, status.decode()), load_record(*shown))
            if outcome.status in ("renewed", "queued"):  # live first (base.py, rule 1)
                return outcome
            first = first or outcome
        return first or RenewOutcome("unknown")

    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
        for tag, named in self._for_account(account):
            released, cancelled = self._call("release", tag, now, call_id, *named)
            if released or cancelled:
                return bool(released), bool(cancelled)
        return False, False

    def tombstone(self, record: Record) -> None:
        self._call("tombstone", self._tag(record.account), 0.0, dump_record(record))

    def cooldown(self, provider: str, alias: str, until: float) -> None:
        value = "inf" if math.isinf(until) else _time(until)
        for tag in self._tags():
            self._call("cooldown", tag, 0.0, f"provider:{provider}:{alias}", value)

    def clear_disabled(self, now: float) -> None:
        for tag in self._tags():
            self._call("clear_disabled", tag, now)

    def expire(self, now: float) -> int:
        return sum(int(self._call("expire", tag, now)) for tag in self._tags())

    def usage(self, now: float) -> UsageSnapshot:
        limits = self._limits
        args = [item for key, (_, period) in limits.windows.items()
                for item in (key, _time(period))]
        in_use: dict[str, int] = {}
        cooldowns: dict[str, float] = {}
        counts: dict[str, int] = {}
        queue: list[Record] = []
        leases = 0
        for tag in self._tags():
            used, cool, queued, tag_leases, window_counts = self._call("usage", tag, now, *args)
            for i in range(0, len(used), 2):
                key = used[i].decode()
                if key != "#leases":  # "#expired" rides along; kernel.usage reads it
                    in_use[key] = in_use.get(key, 0) + int(used[i + 1])
            for i in range(0, len(cool), 2):
                cooldowns[cool[i].decode().removeprefix("provider:")] = float(cool[i + 1])
            for key, count in zip(limits.windows, window_counts, strict=True):
                counts[key] = counts.get(key, 0) + int(count)
            queue += [load_record(queued[i], queued[i + 1]) for i in range(0, len(queued), 2)]
            leases += int(tag_leases)
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
        self._client.close()
