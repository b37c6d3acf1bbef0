"""The Redis store on a real server: URLs, keys, scripts, time, recovery and sharing domains.

The behavioural suite (tests/gate) runs on Redis and on a 3-master cluster through the
``store_factory`` fixture; these tests pin what only the Redis store has.
"""

from __future__ import annotations

import gc
import math
import random
import secrets
import socket
import threading
from typing import Any

import pytest
import redis
import redis.client
from redis.crc import key_slot
from tests.closing import closing
from tests.conftest import stack_from
from tests.gate.stacks import BASE, N1, N2
from tests.stores import redis_server
from tests.stores.redis_server import RedisServer

from callgate.clock import Clock
from callgate.config import ConfigError
from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Call, Decision, Outcome, Reason
from callgate.stores import open_store, redis_step
from callgate.stores import redis as redis_store
from callgate.stores.codec import RECORD_FORMAT
from callgate.stores.redis import RedisStore
from callgate.stores.redis_options import check_sharing, check_version, parse_url
from callgate.stores.redis_scripts import Scripts, library_source, script_sources
from callgate.stores.redis_step import (
    LOCK_FIELD,
    QUEUED,
    Snapshot,
    apply_args,
    lock_value,
)
from callgate.testing import FakeClock


def gate_on(url: str, text: str = BASE, clock: Clock | None = None) -> Gate:
    stack = stack_from(text)
    store = closing(open_store(url, Gate.limits_for(stack)))
    return Gate(stack, store, clock or FakeClock(), rng=random.Random(0))


def in_use(gate: Gate, layer: str, scope: str) -> int:
    rows = gate.usage()["layers"]
    return next(int(r["in_use"]) for r in rows if (r["layer"], r["scope"]) == (layer, scope))


def raw(url: str) -> redis.Redis:
    return closing(redis.Redis.from_url(url.split("?")[0], decode_responses=True))


def test_url_forms_parse_into_client_url_and_own_options() -> None:
    """redis://, rediss://, a password and redis+cluster:// parse; callgate's options split off."""
    plain = parse_url("redis://127.0.0.1:6379/2")
    assert (plain.url, plain.cluster, plain.timeout_s, plain.prefix, plain.sharing) == (
        "redis://127.0.0.1:6379/2", False, 0.5, "callgate", "stack")
    secret = parse_url("rediss://:s3cret@cache.example:6380/0?timeout=0.2&prefix=prod"
                       "&ssl_cert_reqs=none")
    assert secret.url == "rediss://:s3cret@cache.example:6380/0?ssl_cert_reqs=none"
    assert (secret.timeout_s, secret.prefix) == (0.2, "prod")
    cluster = parse_url("redis+cluster://127.0.0.1:7000?sharing=account")
    assert (cluster.url, cluster.cluster, cluster.sharing) == (
        "redis://127.0.0.1:7000", True, "account")


@pytest.mark.parametrize(("url", "named"), [
    ("redis://h:1/0?timeout=0", "timeout='0'"),
    ("redis://h:1/0?timeout=soon", "timeout='soon'"),
    ("redis://h:1/0?prefix={x}", "prefix='{x}'"),
    ("redis://h:1/0?sharing=number", "sharing='number'"),
])
def test_bad_url_options_name_the_value_and_what_is_accepted(url: str, named: str) -> None:
    """A bad callgate option in the URL is refused, naming the value and what is accepted."""
    with pytest.raises(ValueError, match="expected") as info:
        parse_url(url)
    assert named in str(info.value)


def test_stack_accepts_redis_store_urls() -> None:
    """The stack's gate.store accepts redis://, rediss:// and redis+cluster:// URLs."""
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1", "redis+cluster://h:7000"):
        stack = stack_from(BASE.replace("[gate]", f'[gate]\nstore = "{url}"'))
        assert stack.gate.store == url


def test_rediss_url_builds_a_tls_client() -> None:
    """rediss:// gives redis-py a TLS connection class (no server needed to check that)."""
    stack = stack_from(BASE)
    with pytest.raises(StoreError) as info:
        open_store("rediss://:pw@127.0.0.1:1/0?timeout=0.1", Gate.limits_for(stack))
    assert "127.0.0.1:1" in str(info.value) and "pw" not in str(info.value)
    client = closing(redis.Redis.from_url(parse_url("rediss://127.0.0.1:1/0").url))
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


@pytest.mark.slow
def test_password_in_the_url_authenticates(own_server: RedisServer) -> None:
    """A password in the URL is sent to a server that requires one; a wrong one is a StoreError."""
    client = own_server.client()
    client.config_set("requirepass", "s3cret")
    client.close()
    url = f"redis://:s3cret@127.0.0.1:{own_server.port}/0"
    gate = gate_on(url)
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    with pytest.raises(StoreError, match=f"127.0.0.1:{own_server.port}") as info:
        gate_on(f"redis://:wrong@127.0.0.1:{own_server.port}/0")
    assert "wrong" not in str(info.value)


def test_every_key_carries_the_stacks_hash_tag(store_url: str) -> None:
    """Every key a gate writes starts with one hash tag, so every script touches one slot."""
    gate = gate_on(store_url)
    for i in range(4):
        gate.acquire(Call(f"c{i}", "inbound", N1))
    gate.report_provider_error("llm", "k1", 429)
    gate.release("c0")
    prefix = parse_url(store_url).prefix
    keys = raw(store_url).keys(f"*{prefix}*")
    assert len(keys) > 8 and all(k.startswith(f"{{{prefix}}}:") for k in keys)


def _open_sockets() -> set[int]:
    return {id(o) for o in gc.get_objects() if isinstance(o, socket.socket) and o.fileno() != -1}


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_closing_a_store_closes_every_socket_it_opened(kind: str) -> None:
    """close() leaves no socket open, on a cluster too (redis-py's cluster close does not
    close its nodes' pools; the store does)."""
    url = redis_server.shared_url() if kind == "redis" else redis_server.shared_cluster_url()
    before = _open_sockets()
    stack = stack_from(BASE)
    store = open_store(f"{url}?prefix=t{secrets.token_hex(8)}", Gate.limits_for(stack))
    Gate(stack, store, FakeClock()).acquire(Call("c1", "inbound", N1))
    assert _open_sockets() - before  # it did talk to the server
    store.close()
    assert _open_sockets() - before == set()


def test_redis_runs_two_small_generic_scripts_and_never_reads_its_clock() -> None:
    """Redis runs a generic guarded apply and a renew, one function library, no algorithm."""
    sources = script_sources()
    assert set(sources) == {"apply", "renew"}
    name, library = library_source()
    assert library.startswith(f"#!lua name={name}\n")
    assert all(f"register_function('{name}_{script}', {script})" in library
               for script in sources)
    assert '"TIME"' not in "".join(sources.values())  # the gate's clock only, never Redis's
    assert sum(text.count("\n") for text in sources.values()) < 150


def test_scripts_are_reloaded_after_script_flush(store_url: str) -> None:
    """After SCRIPT FLUSH (a restart, a failover) EVALSHA gets NOSCRIPT and the script reloads."""
    gate = gate_on(store_url)
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    raw(store_url).script_flush()
    assert gate.acquire(Call("c2", "inbound", N1)).outcome is Outcome.ADMITTED
    assert in_use(gate, "number", N1) == 2


def test_functions_are_reloaded_after_function_flush(store_url: str) -> None:
    """After FUNCTION FLUSH (a restart without persistence) the library is loaded again."""
    gate = gate_on(store_url)
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    assert gate.renew("c1").status.value == "renewed"
    raw(store_url).function_flush()
    assert gate.acquire(Call("c2", "inbound", N1)).outcome is Outcome.ADMITTED
    assert gate.renew("c1").status.value == "renewed"
    assert in_use(gate, "number", N1) == 2
    assert raw(store_url).function_list(library="callgate_*")


@pytest.mark.parametrize("mismatch", ["held", "absent"])
def test_a_record_that_fails_its_guard_puts_back_every_record_the_apply_set(
        store_url: str, mismatch: str) -> None:
    """Records are guarded and written in one command each (SET NX, SET GET), after every
    other guard: when the last one finds another value (or none), the records set before
    it are put back as they were, and no counter or other write is made."""
    client = closing(redis.Redis.from_url(store_url.split("?")[0]))
    client.set("{t}:old", b"v1")
    client.set("{t}:other", b"someone else's")
    if mismatch == "absent":
        client.delete("{t}:other")
    run = Scripts(client)
    records = ["{t}:new", "", b"n1", "{t}:old", b"v1", b"v2",
               "{t}:other", b"what was read" if mismatch == "absent" else "", b"o2"]
    args = apply_args(counters=["c", "1", ""], records=records,
                      ops=["3", "SET", "{t}:side", "x"])
    assert run("apply", ["{t}:used"], args) == 0
    assert client.get("{t}:new") is None and client.get("{t}:old") == b"v1"
    assert client.get("{t}:other") == (None if mismatch == "absent" else b"someone else's")
    assert not client.exists("{t}:used", "{t}:side")
    records[7] = b"" if mismatch == "absent" else b"someone else's"
    assert run("apply", ["{t}:used"], apply_args(counters=["c", "1", ""], records=records,
                                                 ops=["3", "SET", "{t}:side", "x"])) == 1
    assert client.mget("{t}:new", "{t}:old", "{t}:other", "{t}:side") == [
        b"n1", b"v2", b"o2", b"x"]
    assert client.hget("{t}:used", "c") == b"1"


def test_purge_forgets_only_the_ends_still_past_their_until(store_url: str) -> None:
    """One PURGE forgets a batch of ended calls (one ZMSCORE, DEL, ZREM), skipping any whose
    entry in tombs moved later or went (replaced since the step read it)."""
    client = closing(redis.Redis.from_url(store_url.split("?")[0]))
    client.zadd("{t}:tombs", {"old": 10.0, "moved": 50.0})
    client.mset({"{t}:r:old": b"o", "{t}:r:moved": b"m", "{t}:r:gone": b"g"})
    purge = ["PURGE", "{t}:tombs", "20.0", "old", "moved", "gone",
             "{t}:r:old", "{t}:r:moved", "{t}:r:gone"]
    assert Scripts(client)("apply", ["{t}:used"],
                           apply_args(ops=[str(len(purge)), *purge])) == 1
    assert client.mget("{t}:r:old", "{t}:r:moved", "{t}:r:gone") == [None, b"m", b"g"]
    assert client.zrange("{t}:tombs", 0, -1) == [b"moved"]


def test_an_admission_replay_whose_lease_ends_between_its_reads_reads_again(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retried admission reads its lease's record, then (second round trip) its expiry;
    released in between, the expiry is gone: the step reads again and replays the end,
    never a lease that expired in 1970."""
    clock = FakeClock()
    gate, other = gate_on(store_url, clock=clock), gate_on(store_url, clock=clock)
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    execute = redis.client.Pipeline.execute
    released: list[bool] = []

    def racing(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        commands = [c[0][0] for c in pipe.command_stack]
        if commands and set(commands) == {"ZSCORE"} and not released:
            released.append(other.release("c1").released)
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", racing)
    again = gate.acquire(Call("c1", "inbound", N1))
    assert released == [True]
    assert again.lease is None and again.outcome is not Outcome.ADMITTED


def test_a_failed_guard_makes_the_step_read_and_decide_again(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another gate takes the last slot between a step's read and its apply: the value guard
    fails, the step reads again and answers capacity; the number never goes over its cap."""
    clock = FakeClock()
    stack = stack_from(BASE)
    store = closing(RedisStore.from_url(store_url, Gate.limits_for(stack)))
    gate, other = Gate(stack, store, clock), gate_on(store_url, clock=clock)
    assert gate.acquire(Call("a", "inbound", N1)).outcome is Outcome.ADMITTED  # 1 of 2
    original = Snapshot.changes
    raced: list[Decision] = []
    started: list[bool] = []

    def racing(snap: Snapshot) -> Any:
        if not started:  # once: the other gate's own step runs through here too
            started.append(True)
            raced.append(other.acquire(Call("b", "inbound", N1)))  # 2 of 2
        return original(snap)

    monkeypatch.setattr(Snapshot, "changes", racing)
    decision = gate.acquire(Call("o", "outbound", N1))
    assert raced[0].outcome is Outcome.ADMITTED
    assert (decision.outcome, decision.reason) == (Outcome.RETRY_LATER, Reason.CAPACITY)
    assert store.conflicts == 1  # the first apply failed its guard; the second read blocked
    assert in_use(gate, "number", N1) == 2


def test_a_step_that_never_gets_through_is_an_explicit_store_error(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards that keep failing (here: a step lock another gate holds) end, after the
    contention budget, in the on_store_error decision, with nothing written."""
    monkeypatch.setattr(redis_store, "CONTENTION_BUDGET_S", 0.2)
    gate = gate_on(store_url)
    prefix = parse_url(store_url).prefix
    used = f"{{{prefix}}}:used"
    raw(store_url).hset(used, LOCK_FIELD, lock_value("another-gate", gate.clock.now + 60))
    refused = gate.acquire(Call("c1", "inbound", N1))
    assert (refused.outcome, refused.reason) == (Outcome.REJECTED, Reason.STORE_UNAVAILABLE)
    raw(store_url).hdel(used, LOCK_FIELD)
    assert in_use(gate, "number", N1) == 0
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED


def test_a_step_that_keeps_failing_its_guards_takes_the_step_lock_and_gets_through(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After OPTIMISTIC_ATTEMPTS failed applies a step takes the tag's step lock (a field of
    the counters hash); while it holds it another gate's step waits instead of deciding
    (no failed apply, and waiting is not failing: it never takes the lock itself); the
    holder's apply frees it, and then the other gate gets through."""
    monkeypatch.setattr(redis_store, "LOCK_TTL_S", 30.0)  # far beyond any stall
    clock = FakeClock()
    stack = stack_from(BASE)
    store = closing(RedisStore.from_url(store_url, Gate.limits_for(stack)))
    waiter = closing(RedisStore.from_url(store_url, Gate.limits_for(stack)))
    gate, other = Gate(stack, store, clock), Gate(stack, waiter, clock)
    took: list[str] = []
    take = waiter._take_lock
    monkeypatch.setattr(waiter, "_take_lock", lambda *a: took.append("x") or take(*a))
    used = f"{{{parse_url(store_url).prefix}}}:used"
    client = raw(store_url)
    run = store._scripts
    applies: list[int] = []
    seen: dict[str, Any] = {}

    def scripts(name: str, keys: list[str], args: Any) -> Any:
        if name != "apply":
            return run(name, keys, args)
        applies.append(1)
        if len(applies) <= redis_store.OPTIMISTIC_ATTEMPTS:
            return 0  # as if another gate had changed what this step read
        if len(applies) == redis_store.OPTIMISTIC_ATTEMPTS + 2:  # the step's own apply
            seen["lock"] = client.hget(used, LOCK_FIELD)
            waiting = threading.Thread(
                target=lambda: seen.setdefault("other", other.acquire(Call("b", "inbound", N1))))
            waiting.start()
            waiting.join(0.2)
            seen["waited"] = waiting.is_alive()
            seen["thread"] = waiting
        return run(name, keys, args)

    monkeypatch.setattr(store, "_scripts", scripts)
    assert gate.acquire(Call("a", "inbound", N1)).outcome is Outcome.ADMITTED
    seen["thread"].join(10)
    assert seen["lock"] and seen["waited"]  # held during the apply; the other gate waited
    assert seen["other"].outcome is Outcome.ADMITTED
    assert (waiter.conflicts, took) == (0, [])
    assert client.hget(used, LOCK_FIELD) is None
    assert in_use(gate, "number", N1) == 2


def test_a_step_lock_past_its_deadline_is_freed_by_the_next_step(store_url: str) -> None:
    """A gate that died holding the step lock blocks nobody past the lock's deadline: the
    next step guards on the value it read, frees it, and is admitted at once."""
    gate = gate_on(store_url)
    used = f"{{{parse_url(store_url).prefix}}}:used"
    raw(store_url).hset(used, LOCK_FIELD, lock_value("a-dead-gate", gate.clock.now - 0.5))
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    assert raw(store_url).hget(used, LOCK_FIELD) is None
    assert in_use(gate, "number", N1) == 1


def test_a_renew_moves_only_the_leases_expiry_and_rewrites_no_record(store_url: str) -> None:
    """A heartbeat while nobody is queued is the renew script: the lease's score in P due
    moves, its record's bytes stay as they were, and the answer carries the new expiry."""
    clock = FakeClock()
    gate = gate_on(store_url, clock=clock)
    tag = f"{{{parse_url(store_url).prefix}}}:"
    client = closing(redis.Redis.from_url(store_url.split("?")[0]))
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    (ident,) = [k.decode()[len(tag) + 2:] for k in client.keys(f"{tag}r:*")]
    before = client.get(f"{tag}r:{ident}")
    clock.advance(10)
    renewed = gate.renew("c1")
    assert renewed.lease is not None and renewed.lease.expires_at == clock.now + 30
    assert client.get(f"{tag}r:{ident}") == before
    assert client.zscore(f"{tag}due", ident) == clock.now + 30


def test_a_step_that_read_a_lease_due_never_expires_it_once_renewed(store_url: str) -> None:
    """A gate whose clock is ahead reads a lease as due and decides to expire it; the
    lease's owner renews it (by a gate whose clock is behind) before that step applies.
    The expiry guard fails, the step reads again, and the renewed lease stays held."""
    stack = stack_from(BASE)
    store = closing(RedisStore.from_url(store_url, Gate.limits_for(stack)))
    behind, ahead = FakeClock(), FakeClock()
    owner, reaper = Gate(stack, store, behind), Gate(stack, store, ahead)
    assert owner.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED  # ttl 30
    behind.advance(29.5)
    ahead.advance(30.5)
    original = Snapshot.changes
    renewed: list[str] = []

    def racing(snap: Snapshot) -> Any:
        if not renewed:
            renewed.append(owner.renew("c1").status.value)
        return original(snap)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Snapshot, "changes", racing)
        assert reaper.expire() == 0
    assert renewed == ["renewed"]
    assert store.conflicts == 1
    assert in_use(owner, "number", N1) == 1
    assert reaper.renew("c1").status.value == "renewed"


def test_a_renew_touches_only_its_own_call_unless_a_call_is_queued(store_url: str) -> None:
    """With nobody queued, renewing one lease leaves another's due expiry to the next step
    (its slot is freed there, before any admission); with a caller queued, the renew is a
    full step: the due lease ends and the caller is promoted into its slot."""
    clock = FakeClock()
    gate = gate_on(store_url, clock=clock)
    tag = f"{{{parse_url(store_url).prefix}}}:"
    client = raw(store_url)
    gate.acquire(Call("a", "inbound", N1), ttl_s=60)
    gate.acquire(Call("b", "inbound", N1))  # ttl 30: number N1 full (2 of 2)
    clock.advance(31)
    assert gate.renew("a").status.value == "renewed"
    assert client.hget(f"{tag}used", f"number:{N1}") == "2"  # b not ended by a's renew
    assert gate.acquire(Call("b2", "inbound", N1), ttl_s=5).outcome is Outcome.ADMITTED
    assert gate.acquire(Call("q", "inbound", N1)).outcome is Outcome.QUEUED
    assert client.zscore(f"{tag}due", QUEUED) == math.inf  # what the renew script reads
    assert gate.usage()["leases"] == 2  # a and b2 (not q, nor the mark)
    clock.advance(6)  # b2 due, q waiting
    assert client.exists(f"{tag}qs") == 1
    assert gate.renew("a").status.value == "renewed"
    assert client.exists(f"{tag}qs") == 0  # q promoted into b2's slot by the renew
    assert client.zscore(f"{tag}due", QUEUED) is None
    assert client.hget(f"{tag}used", f"number:{N1}") == "2"
    assert gate.usage()["leases"] == 2


def test_ended_calls_past_their_until_are_deleted_by_the_reaper_pass(store_url: str) -> None:
    """Memory is bounded by time: admissions and releases forget ended calls in about one
    step in PRUNE_EVERY (an end past its until is gone to lookups either way), and every
    reaper pass (``expire``) deletes all of them that are past their until."""
    clock = FakeClock()
    gate = gate_on(store_url, clock=clock)
    tag = f"{{{parse_url(store_url).prefix}}}:"
    client = raw(store_url)
    for call_id in ("a", "b", "c"):
        gate.acquire(Call(call_id, "inbound", N1))
        gate.release(call_id)
    assert client.zcard(f"{tag}tombs") == 3
    clock.advance(gate.stack.gate.ended_ttl + 1)
    gate.expire()
    assert client.zcard(f"{tag}tombs") == 0
    assert not client.keys(f"{tag}r:*")


def test_a_server_older_than_6_2_is_refused_naming_both_versions(store_url: str) -> None:
    """The scripts need SET ... GET and ZMSCORE (Redis 6.2): an older node is refused when
    the store opens, with the version found and the one needed; the real server passes."""
    with pytest.raises(StoreError, match=r"runs Redis 6\.0\.16; callgate needs Redis 6\.2"):
        check_version(["7.2.4", "6.0.16"], "cache:6379")
    check_version(["6.2.0", "7.0.15", "unknown"], "cache:6379")
    assert gate_on(store_url).acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED


def test_a_tag_is_marked_with_its_record_format_and_another_format_is_refused(
        store_url: str) -> None:
    """A store marks its tag with the record format it writes; a gate of another callgate
    version, whose records it would misread, is refused when it opens the store, naming
    both formats, and the calls kept there are left as they were."""
    gate = gate_on(store_url)
    assert gate.acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    tag = "{" + parse_url(store_url).prefix + "}:"
    client = raw(store_url)
    assert client.get(f"{tag}format") == str(RECORD_FORMAT)
    client.set(f"{tag}format", "9")
    kept = {key: client.type(key) for key in client.keys(f"{tag}*")}
    with pytest.raises(StoreError, match=rf"as format 9 records.*format {RECORD_FORMAT}\."):
        gate_on(store_url)
    assert {key: client.type(key) for key in client.keys(f"{tag}*")} == kept
    assert client.get(f"{tag}format") == "9"


def test_calls_kept_without_a_format_mark_are_refused_and_an_empty_tag_is_marked(
        store_url: str) -> None:
    """Callgates before format 2 wrote no mark: calls kept under an unmarked tag are
    theirs and are refused; an unmarked tag that keeps no call is simply marked."""
    tag = "{" + parse_url(store_url).prefix + "}:"
    client = raw(store_url)
    client.zadd(f"{tag}due", {"4:acme:old": 1.0})
    with pytest.raises(StoreError, match="as records older than format 2"):
        gate_on(store_url)
    client.delete(f"{tag}due")
    assert gate_on(store_url).acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    assert client.get(f"{tag}format") == str(RECORD_FORMAT)


def test_a_step_forgets_an_end_past_its_until_that_it_looks_up(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the random read of what is due to be forgotten, a step that looks up an
    ended call past its until forgets it (the record key is gone after the step), so a
    final rejection can be remembered under that id at once."""
    monkeypatch.setattr(redis_step.random, "random", lambda: 0.99)  # never the tombs read
    clock = FakeClock()
    gate = gate_on(store_url, clock=clock)
    tag = f"{{{parse_url(store_url).prefix}}}:"
    client = raw(store_url)
    gate.acquire(Call("c1", "inbound", N1))
    gate.release("c1")
    clock.advance(gate.stack.gate.ended_ttl + 1)
    ident = "4:acme:c1"  # <bytes of account>:<account>:<call id>
    assert client.exists(f"{tag}r:{ident}") == 1
    assert gate.renew("c1").status.value == "unknown"  # gone to lookups
    assert client.exists(f"{tag}r:{ident}") == 0
    assert client.zscore(f"{tag}tombs", ident) is None


def test_a_redis_user_that_may_not_run_info_still_opens_the_store(store_url: str) -> None:
    """Managed Redis often denies INFO: the version check is skipped, the store works."""
    admin = raw(store_url)
    admin.acl_setuser("cg-noinfo", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-info"], reset=True)
    try:
        where = admin.connection_pool.connection_kwargs
        url = f"redis://cg-noinfo:pw@{where['host']}:{where['port']}/0?prefix=noinfo"
        assert gate_on(url).acquire(Call("c1", "inbound", N1)).outcome is Outcome.ADMITTED
    finally:
        admin.acl_deluser("cg-noinfo")


def test_limits_lost_or_rewritten_are_restored_from_the_asking_gate(store_url: str) -> None:
    """Limits deleted (Redis restarted empty) or written by another stack are rewritten per gate."""
    clock = FakeClock()
    gate = gate_on(store_url, clock=clock)
    raw(store_url).delete(f"{{{parse_url(store_url).prefix}}}:limits")
    gate.acquire(Call("c1", "inbound", N1))
    gate.acquire(Call("c2", "inbound", N1))
    assert gate.acquire(Call("c3", "inbound", N1)).outcome is Outcome.QUEUED  # cap 2 applied
    wider = gate_on(store_url, BASE.replace('trunk = "t1"\nmax_concurrent = 2',
                                            'trunk = "t1"\nmax_concurrent = 3', 1), clock=clock)
    assert wider.acquire(Call("c3", "inbound", N1)).reason is Reason.PROMOTED  # cap 3 applied
    gate.release("c1")
    assert gate.acquire(Call("o1", "outbound", N1)).reason is Reason.CAPACITY  # 2 of 2
    assert wider.acquire(Call("o2", "outbound", N1)).outcome is Outcome.ADMITTED  # 3 of 3


def test_times_round_trip_exactly_through_redis(store_url: str) -> None:
    """Epoch times that need 17 digits come back bit-exact (records, scores, the renew script)."""
    clock = FakeClock(1_800_000_000.123456789)
    gate = gate_on(store_url, clock=clock)
    clock.advance(0.1)
    clock.advance(0.2)
    decision = gate.acquire(Call("c1", "inbound", N1), ttl_s=1 / 3)
    assert decision.lease is not None
    assert decision.lease.admitted_at == clock.now
    assert decision.lease.expires_at == clock.now + 1 / 3
    clock.advance(0.1 / 3)
    renewed = gate.renew("c1")  # the script: Lua's double, passed to ZADD as a number
    assert renewed.lease is not None and renewed.lease.expires_at == clock.now + 1 / 3
    due = raw(store_url).zrange(f"{{{parse_url(store_url).prefix}}}:due", 0, -1,
                                withscores=True)
    assert [score for _, score in due] == [clock.now + 1 / 3]


def test_a_stopped_gates_leases_are_free_on_the_next_step_after_expiry(store_url: str) -> None:
    """Leases a gate stops renewing are free to another gate on the first step past expiry."""
    clock = FakeClock()
    first = gate_on(store_url, clock=clock)
    second = gate_on(store_url, clock=clock)
    first.acquire(Call("a", "inbound", N1))
    first.acquire(Call("b", "inbound", N1))
    clock.advance(29.999)
    assert second.acquire(Call("early", "outbound", N1)).outcome is Outcome.RETRY_LATER
    clock.advance(0.001)  # exactly at expires_at: due
    decision = second.acquire(Call("next", "outbound", N1))
    assert decision.outcome is Outcome.ADMITTED
    assert in_use(second, "number", N1) == 1
    assert first.renew("a").status.value == "expired"


def test_reload_keeps_every_lease_and_queue_entry(store_url: str) -> None:
    """configure + clear_disabled (a reload) keep leases and queue entries in Redis."""
    gate = gate_on(store_url)
    gate.acquire(Call("c1", "inbound", N1))
    gate.acquire(Call("c2", "inbound", N1))
    gate.acquire(Call("q1", "inbound", N1))
    gate.reload(stack_from(BASE.replace("[trunks.t1]\nmax_concurrent = 4",
                                        "[trunks.t1]\nmax_concurrent = 5")))
    assert in_use(gate, "number", N1) == 2
    assert [e["call_id"] for e in gate.queue()] == ["q1"]
    assert gate.renew("c1").status.value == "renewed"


@pytest.mark.slow
def test_ping_raises_store_error_when_redis_is_down(own_server: RedisServer) -> None:
    """ping() raises StoreError while Redis is down (so /readyz says so), and passes again after."""
    gate = gate_on(f"{own_server.url}?timeout=0.2")
    gate.ping()
    own_server.stop()
    with pytest.raises(StoreError, match="unreachable"):
        gate.ping()
    own_server.start()
    gate.ping()


TWO_TENANTS = """
[trunks.ta]
max_concurrent = 2
[trunks.tb]
max_concurrent = 2
[plans.p]
max_concurrent = 2
[accounts.a]
plan = "p"
[accounts.b]
plan = "p"
[numbers."+15550000001"]
account = "a"
trunk = "ta"
max_concurrent = 2
[numbers."+15550000002"]
account = "b"
trunk = "tb"
max_concurrent = 2
"""


def test_account_sharing_puts_each_account_in_its_own_slot(store_url: str) -> None:
    """sharing=account tags keys per account: two slots, each account's caps still kept."""
    url = store_url + "&sharing=account"
    gate = gate_on(url, TWO_TENANTS)
    for i in range(3):
        gate.acquire(Call(f"a{i}", "outbound", N1))
        gate.acquire(Call(f"b{i}", "outbound", N2))
    assert in_use(gate, "number", N1) == 2 and in_use(gate, "number", N2) == 2
    assert gate.release("b0").released and in_use(gate, "trunk", "tb") == 1
    prefix = parse_url(url).prefix
    keys = raw(url).keys(f"*{prefix}*")
    tags = {k.split("}")[0] for k in keys}
    assert tags == {f"{{{prefix}:a", f"{{{prefix}:b"}
    slots = {key_slot(k.encode()) for k in keys}
    assert len(slots) == 2


def test_account_sharing_finds_the_live_lease_of_a_later_account(store_url: str) -> None:
    """Per-account tags, renew and release without an account: b's live lease is found
    behind a's ended call of the same id (ordering rule 1 across hash tags)."""
    gate = gate_on(store_url + "&sharing=account", TWO_TENANTS)
    gate.acquire(Call("x", "inbound", N1))
    assert gate.release("x", account="a").released
    gate.acquire(Call("x", "inbound", N2))
    renewed = gate.renew("x")
    assert renewed.lease is not None and renewed.lease.account == "b"
    assert gate.release("x").released and in_use(gate, "account", "b") == 0
    assert gate.renew("x").status.value == "ended"


def test_account_sharing_is_refused_when_accounts_share_a_pool_or_trunk(store_url: str) -> None:
    """sharing=account is refused, naming the shared pool or trunk, when accounts share one."""
    shared_pool = TWO_TENANTS + '[providers.llm]\nkeys = ["k1"]\nsessions_per_key = 2\n'
    with pytest.raises(ConfigError, match="provider:llm"):
        gate_on(store_url + "&sharing=account", shared_pool)
    shared_trunk = TWO_TENANTS.replace('account = "b"\ntrunk = "tb"', 'account = "b"\ntrunk = "ta"')
    stack = stack_from(f'[gate]\nstore = "{store_url}&sharing=account"\n{shared_trunk}')
    with pytest.raises(ConfigError, match=r"trunks\.ta"):
        check_sharing(stack)
    gate = Gate(stack, closing(open_store(stack.gate.store, Gate.limits_for(stack))),
                FakeClock())
    assert gate.acquire(Call("a1", "inbound", N1)).outcome is Outcome.ADMITTED
    refused = gate.acquire(Call("b1", "inbound", N2))  # the trunk's cap cannot be kept
    assert (refused.outcome, refused.reason) == (Outcome.REJECTED, Reason.STORE_UNAVAILABLE)


def test_redis_store_is_a_store_for_open_store(store_url: str) -> None:
    """open_store returns a RedisStore for a redis:// URL and it closes cleanly."""
    store = open_store(store_url, Gate.limits_for(stack_from(BASE)))
    assert isinstance(store, RedisStore)
    store.ping()
    store.close()
