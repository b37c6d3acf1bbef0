"""The HTTP API, route by route, against a memory gate on a fake clock."""

from __future__ import annotations

import asyncio
import logging
import threading
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callgate.config import Stack, parse_stack
from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Call
from callgate.service.app import create_app
from callgate.stores import SqliteStore
from callgate.testing import FakeClock, memory_gate, serving

N1 = "+14155550100"  # one line, one outbound call a minute
N2 = "+14155550101"  # two lines

STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"
poll_timeout = "1h"

[trunks.t1]
max_concurrent = 10

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"

[numbers."{N1}"]
account = "acme"
trunk = "t1"
max_concurrent = 1
windows = [{{ direction = "outbound", limit = 1, per = "1m" }}]

[numbers."{N2}"]
account = "acme"
trunk = "t1"
max_concurrent = 2

[providers.llm]
keys = ["key-a", "key-b"]
sessions_per_key = 5

[inbound]
queue_max = 1
max_wait = "2m"
retry_after = "5m"

[outbound]
jitter = "none"
"""


pytestmark = pytest.mark.anyio




def make_stack(text: str = STACK) -> Stack:
    return parse_stack(tomllib.loads(text))




@dataclass
class Api:
    client: httpx.AsyncClient
    gate: Gate
    clock: FakeClock

    async def call(self, call_id: str, direction: str = "inbound", number: str = N1,
                   **extra: Any) -> httpx.Response:
        body = {"call_id": call_id, "direction": direction, "number": number, **extra}
        return await self.client.post("/v1/calls", json=body)

    async def usage(self) -> dict[str, Any]:
        response = await self.client.get("/v1/usage")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """The JSON body of a request that must answer 200."""
        response = await self.client.request(method, url, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    async def decision(self, call_id: str, direction: str = "inbound", number: str = N1) -> str:
        response = await self.call(call_id, direction, number)
        assert response.status_code == 200, response.text
        outcome: str = response.json()["decision"]
        return outcome

    async def layer(self, layer: str, scope: str) -> dict[str, Any]:
        rows: list[dict[str, Any]] = [
            r for r in (await self.usage())["layers"] if (r["layer"], r["scope"]) == (layer, scope)]
        assert len(rows) == 1, f"no usage row for {layer} {scope}"
        return rows[0]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock()
    gate = memory_gate(make_stack(), clock)
    async with serving(create_app(gate)) as client:
        yield Api(client, gate, clock)


@pytest.fixture
async def reloadable(tmp_path: Path) -> AsyncIterator[tuple[Api, Path]]:
    path = tmp_path / "stack.toml"
    path.write_text(STACK, encoding="utf-8")
    clock = FakeClock()
    gate = memory_gate(make_stack(), clock)
    async with serving(create_app(gate, config_path=str(path))) as client:
        yield Api(client, gate, clock), path


# acquire ------------------------------------------------------------------------------
async def test_admitted_call_gets_a_lease_and_holds_its_slots(api: Api) -> None:
    """An admitted call answers 200 with a lease (expiry, TTL, key per pool) and holds slots."""
    response = await api.call("a")
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] == "admitted" and body["reason"] == "admitted"
    assert body["lease"]["keys"] == {"llm": "key-a"}
    assert body["lease"]["ttl_s"] == 30.0
    assert body["lease"]["expires_at"] == api.clock.now + 30.0
    assert body["queue"] is None and body["retry_after_s"] is None
    assert "retry-after" not in response.headers
    assert (await api.layer("number", N1))["in_use"] == 1
    assert (await api.layer("provider", "llm:key-a"))["in_use"] == 1


async def test_ttl_s_sets_the_lease_ttl_and_outbound_rings_on_dial_ttl(api: Api) -> None:
    """ttl_s in the body sets the lease's TTL; an outbound lease without it lives dial_ttl."""
    own = await api.json("POST", "/v1/calls", json={
        "call_id": "a", "direction": "inbound", "number": N2, "ttl_s": 600})
    assert own["lease"]["ttl_s"] == 600 and own["lease"]["expires_at"] == api.clock.now + 600
    dial = await api.json("POST", "/v1/calls", json={
        "call_id": "b", "direction": "outbound", "number": N2})
    assert dial["lease"]["ttl_s"] == 30 and dial["lease"]["expires_at"] == api.clock.now + 90


async def test_settings_give_the_lease_timings(api: Api) -> None:
    """GET /v1/settings: lease_ttl, dial_ttl, the webhook TTL and max_call_duration."""
    assert await api.json("GET", "/v1/settings") == {
        "lease_ttl_s": 30.0, "dial_ttl_s": 90.0, "webhook_lease_ttl_s": 7200.0,
        "max_call_duration_s": 7200.0}


async def test_queued_call_is_promoted_after_another_call_is_released(api: Api) -> None:
    """A full number queues an inbound call (200), and a DELETE of the holder promotes it."""
    assert await api.decision("a") == "admitted"
    queued = (await api.call("b")).json()
    assert queued["decision"] == "queued"
    assert queued["queue"]["position"] == 1 and queued["queue"]["estimated_wait_s"] > 0
    assert (queued["layer"], queued["scope"], queued["reason"]) == ("number", N1, "capacity")
    assert queued["message"]
    entries = (await api.json("GET", "/v1/queue"))["entries"]
    assert [(e["call_id"], e["position"]) for e in entries] == [("b", 1)]

    released = await api.json("DELETE", "/v1/calls/a")
    assert released == {"released": True, "cancelled": False}
    promoted = (await api.call("b")).json()
    assert promoted["decision"] == "admitted" and promoted["reason"] == "promoted"
    assert promoted["lease"] is not None
    assert await api.json("GET", "/v1/queue") == {"entries": []}


async def test_outbound_window_answers_retry_later_with_a_rounded_up_retry_after(
    api: Api,
) -> None:
    """An outbound call over a 1/min window gets retry_later and Retry-After rounded up."""
    assert await api.decision("o1", "outbound") == "admitted"
    await api.json("DELETE", "/v1/calls/o1")
    api.clock.advance(0.5)
    response = await api.call("o2", "outbound")
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] == "retry_later"
    assert (body["layer"], body["scope"], body["reason"]) == (
        "window", f"{N1}:outbound:1m", "rate_window")
    assert body["retry_after_s"] == pytest.approx(59.5)
    assert response.headers["retry-after"] == "60"


async def test_full_queue_rejects_with_queue_full_and_retry_after(api: Api) -> None:
    """Past queue_max an inbound call is rejected (still a 200) with the overflow message."""
    await api.call("a")
    await api.call("b")
    response = await api.call("c")
    assert response.status_code == 200
    body = response.json()
    assert (body["decision"], body["reason"], body["layer"]) == ("rejected", "queue_full", "number")
    assert body["retry_after_s"] == 300.0 and response.headers["retry-after"] == "300"
    assert "more calls than we can take" in body["message"]


async def test_same_call_id_with_a_different_body_is_409(api: Api) -> None:
    """Reusing a call id with a different body is a 409 that says to use a new id."""
    await api.call("a")
    response = await api.call("a", number=N2)
    assert response.status_code == 409
    assert response.json()["error"] == "call_conflict"
    assert "new call id" in response.json()["detail"]
    assert await api.decision("a") == "admitted"  # the same body still replays


async def test_unknown_number_is_404_naming_it(api: Api) -> None:
    """A number the stack does not gate is a 404 naming the number and where to add it."""
    response = await api.call("a", number="+19995550000")
    assert response.status_code == 404
    assert "+19995550000" in response.json()["detail"]
    assert "[numbers]" in response.json()["detail"]


@pytest.mark.parametrize("extra", [{"providers": ["nope"]}, {"resources": {"gpu": 1}}])
async def test_unknown_provider_or_resource_is_422(api: Api, extra: dict[str, Any]) -> None:
    """A body naming a provider pool or resource the stack lacks is a 422 listing the defined."""
    response = await api.call("a", **extra)
    assert response.status_code == 422
    assert response.json()["error"] == "unknown_provider"
    assert "defined" in response.json()["detail"]


@pytest.mark.parametrize(
    ("extra", "field", "value", "words"),
    [
        ({"direction": "sideways"}, "body.direction", "sideways", "'inbound' or 'outbound'"),
        ({"attempt": 0}, "body.attempt", 0, "greater than or equal to 1"),
        ({"resources": {"db": -1}}, "body.resources.db", -1, "greater than or equal to 0"),
        ({"priorty": 3}, "body.priorty", 3, "unknown field"),
        ({"call_id": ""}, "body.call_id", "", "1 to 256 visible ASCII characters"),
        ({"ttl_s": 0}, "body.ttl_s", 0, "greater than 0"),
        ({"ttl_s": "long"}, "body.ttl_s", "long", "valid number"),
    ],
)
async def test_invalid_body_is_422_naming_field_and_value_and_changes_nothing(
    api: Api, extra: dict[str, Any], field: str, value: Any, words: str
) -> None:
    """A bad body is a 422 naming the field, the value and what is accepted; usage is intact."""
    await api.call("held", number=N2)
    before = await api.usage()
    body = {"call_id": "x", "direction": "inbound", "number": N1, **extra}
    response = await api.client.post("/v1/calls", json=body)
    assert response.status_code == 422
    document = response.json()
    assert document["error"] == "invalid request"
    found = [(d["field"], d["value"]) for d in document["detail"]]
    assert (field, value) in found
    assert any(words in d["message"] for d in document["detail"])
    after = await api.usage()
    assert (after["layers"], after["leases"]) == (before["layers"], before["leases"])
    assert after["leases"] == 1


async def test_missing_field_and_broken_json_are_422(api: Api) -> None:
    """A missing field and a body that is not JSON are 422s that say so."""
    missing = await api.client.post("/v1/calls", json={"call_id": "a", "direction": "inbound"})
    assert missing.status_code == 422
    assert missing.json()["detail"] == [
        {"field": "body.number", "value": None, "message": "field required"}]
    broken = await api.client.post("/v1/calls", content=b"{not json",
                                   headers={"content-type": "application/json"})
    assert broken.status_code == 422
    assert broken.json()["error"] == "invalid request"


# renew and release --------------------------------------------------------------------
async def test_renew_pushes_the_expiry_forward(api: Api) -> None:
    """Renewing a live lease answers 200 with an expiry of now + TTL (or the asked ttl_s)."""
    await api.call("a")
    api.clock.advance(20)
    renewed = await api.json("POST", "/v1/calls/a/renew")
    assert renewed["call_id"] == "a"
    assert renewed["lease"]["expires_at"] == api.clock.now + 30.0
    shorter = await api.json("POST", "/v1/calls/a/renew", params={"ttl_s": 5, "account": "acme"})
    assert shorter["lease"]["expires_at"] == api.clock.now + 5.0


async def test_renew_after_the_ttl_is_404_saying_expired(api: Api) -> None:
    """A lease not renewed within its TTL is gone: 404, status expired, re-acquire."""
    await api.call("a")
    api.clock.advance(31)
    response = await api.client.post("/v1/calls/a/renew")
    assert response.status_code == 404
    assert response.json()["status"] == "expired"
    assert "re-acquire" in response.json()["detail"]
    assert (await api.layer("number", N1))["in_use"] == 0


async def test_renew_refusals_say_why(api: Api) -> None:
    """Renew of a queued, an unknown and a released call says which, each a 404."""
    await api.call("a")
    await api.call("b")  # queued behind a
    queued = await api.client.post("/v1/calls/b/renew")
    assert (queued.status_code, queued.json()["status"]) == (404, "queued")
    assert "keep polling" in queued.json()["detail"]
    unknown = await api.client.post("/v1/calls/nobody/renew")
    assert (unknown.status_code, unknown.json()["status"]) == (404, "unknown")
    await api.client.delete("/v1/calls/a")
    ended = await api.client.post("/v1/calls/a/renew")
    assert (ended.status_code, ended.json()["status"]) == (404, "ended")


async def test_release_is_idempotent_and_cancels_a_queued_call(api: Api) -> None:
    """DELETE frees a lease once, cancels a queued call, and is a harmless no-op after."""
    await api.call("a")
    await api.call("b")
    nothing = {"released": False, "cancelled": False}
    assert await api.json("DELETE", "/v1/calls/b") == {"released": False, "cancelled": True}
    assert await api.json("DELETE", "/v1/calls/a") == {"released": True, "cancelled": False}
    assert await api.json("DELETE", "/v1/calls/a") == nothing
    assert await api.json("DELETE", "/v1/calls/never") == nothing
    assert await api.layer("number", N1) == {
        "layer": "number", "scope": N1, "in_use": 0, "cap": 1, "queued": 0}


async def test_release_in_another_account_frees_nothing(api: Api) -> None:
    """DELETE with an account query only frees that account's call."""
    await api.call("a")
    other = await api.json("DELETE", "/v1/calls/a", params={"account": "other"})
    assert other["released"] is False
    mine = await api.json("DELETE", "/v1/calls/a", params={"account": "acme"})
    assert mine["released"] is True


# providers ------------------------------------------------------------------------------
async def test_provider_429_cools_the_key_down_everywhere(api: Api) -> None:
    """A 429 report cools the key (visible in /v1/usage) and new calls skip it."""
    report = await api.json("POST", "/v1/providers/llm/keys/key-a/errors",
                            json={"status": 429, "retry_after_s": 20})
    until = api.clock.now + 20
    assert report == {"provider": "llm", "key": "key-a", "cooldown_until": until}
    assert {"scope": "llm:key-a", "until": until} in (await api.usage())["cooldowns"]
    assert (await api.call("a")).json()["lease"]["keys"] == {"llm": "key-b"}


async def test_provider_401_disables_the_key_until_reload(api: Api) -> None:
    """A 401 report disables the key: cooldown_until is null, in the answer and in usage."""
    report = await api.json("POST", "/v1/providers/llm/keys/key-b/errors", json={"status": 401})
    assert report["cooldown_until"] is None
    assert {"scope": "llm:key-b", "until": None} in (await api.usage())["cooldowns"]


async def test_provider_report_errors_name_what_is_wrong(api: Api) -> None:
    """An unknown key is a 404; a status that cools nothing is a 422 naming body.status."""
    unknown = await api.client.post("/v1/providers/llm/keys/key-z/errors", json={"status": 429})
    assert unknown.status_code == 404 and "llm:key-z" in unknown.json()["detail"]
    wrong = await api.client.post("/v1/providers/llm/keys/key-a/errors", json={"status": 404})
    assert wrong.status_code == 422
    [detail] = wrong.json()["detail"]
    assert (detail["field"], detail["value"]) == ("body.status", 404)
    assert "429" in detail["message"]
    assert (await api.usage())["cooldowns"] == []


# reload ---------------------------------------------------------------------------------
async def test_reload_applies_new_caps_and_keeps_leases(reloadable: tuple[Api, Path]) -> None:
    """A reload re-reads the file: the new cap applies and the admitted lease is still held."""
    api, path = reloadable
    assert await api.decision("a") == "admitted"
    path.write_text(STACK.replace("max_concurrent = 1", "max_concurrent = 3"), encoding="utf-8")
    reloaded = await api.json("POST", "/v1/admin/reload")
    assert reloaded["reloaded"] is True and reloaded["layers"] > 0
    assert await api.layer("number", N1) == {
        "layer": "number", "scope": N1, "in_use": 1, "cap": 3, "queued": 0}
    assert (await api.client.post("/v1/calls/a/renew")).status_code == 200
    assert await api.decision("b") == "admitted"


async def test_bad_reload_is_422_naming_the_key_and_keeps_the_stack(
    reloadable: tuple[Api, Path],
) -> None:
    """A broken file is refused with a 422 naming key and value; the running stack stays."""
    api, path = reloadable
    await api.call("a")
    path.write_text(STACK.replace("max_concurrent = 2", 'max_concurrent = "lots"'),
                    encoding="utf-8")
    response = await api.client.post("/v1/admin/reload")
    assert response.status_code == 422
    body = response.json()
    key = f'numbers."{N2}".max_concurrent'
    assert body["error"] == "invalid_stack"
    assert key in body["detail"]
    assert (key, "lots") in [(i["path"], i["value"]) for i in body["issues"]]
    assert (await api.layer("number", N2))["cap"] == 2
    assert (await api.client.post("/v1/calls/a/renew")).status_code == 200


async def test_reload_without_a_config_file_is_409(api: Api) -> None:
    """An app started without a stack file has nothing to reload: 409."""
    response = await api.client.post("/v1/admin/reload")
    assert response.status_code == 409
    assert "no config file" in response.json()["detail"]


# health and failures ------------------------------------------------------------------
async def test_health_ready_and_docs(api: Api) -> None:
    """/healthz and /readyz answer 200 on a live store; /docs and the OpenAPI are served."""
    assert await api.json("GET", "/healthz") == {"status": "ok"}
    assert await api.json("GET", "/readyz") == {"status": "ready", "store": "memory://"}
    assert (await api.client.get("/docs")).status_code == 200
    paths = set((await api.json("GET", "/openapi.json"))["paths"])
    assert {"/v1/calls", "/v1/calls/{call_id}/renew", "/v1/usage", "/v1/admin/reload"} <= paths


class PinglessStore(SqliteStore):
    """A SQLite store whose health check always fails."""

    def ping(self) -> None:
        raise StoreError("the disk went away")


async def test_readyz_is_503_when_the_store_does_not_answer(tmp_path: Path) -> None:
    """/readyz answers 503 store_unavailable, naming the cause, when ping fails."""
    stack = make_stack()
    gate = Gate(stack, PinglessStore(tmp_path / "g.db", Gate.limits_for(stack)), FakeClock())
    async with serving(create_app(gate, store_url="sqlite:///g.db")) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "store_unavailable", "detail": "the disk went away"}


async def test_a_closed_store_gives_503s_and_explicit_decisions(tmp_path: Path) -> None:
    """With its store closed the API answers 503 store_unavailable, and acquire a decision."""
    stack = make_stack()
    store = SqliteStore(tmp_path / "g.db", Gate.limits_for(stack))
    api = Api(httpx.AsyncClient(), Gate(stack, store, FakeClock()), FakeClock())
    async with serving(create_app(api.gate)) as api.client:
        assert await api.decision("a") == "admitted"
        store.close()
        assert (await api.client.get("/readyz")).status_code == 503
        for method, url in [("GET", "/v1/usage"), ("GET", "/v1/queue"),
                            ("DELETE", "/v1/calls/a"), ("POST", "/v1/calls/a/renew")]:
            response = await api.client.request(method, url)
            assert response.status_code == 503, (method, url)
            assert response.json()["reason"] == "store_unavailable"
        decided = await api.call("b", number=N2)
    assert decided.status_code == 200
    assert (decided.json()["decision"], decided.json()["reason"]) == (
        "rejected", "store_unavailable")
    assert decided.headers["retry-after"] == "300"


async def test_an_unexpected_error_is_a_json_500_without_the_trace(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug answers a JSON 500 that hides the trace; the trace goes to the log."""
    def broken() -> dict[str, Any]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.gate, "usage", broken)
    with caplog.at_level(logging.ERROR, logger="callgate.service"):
        async with serving(create_app(api.gate), raise_app_exceptions=False) as client:
            response = await client.get("/v1/usage")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details",
                               "error": "internal"}
    assert "secret" not in response.text
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


async def test_the_reaper_expires_leases_and_survives_store_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The background reaper calls expire every interval, logs a StoreError and carries on."""
    clock = FakeClock()
    gate = memory_gate(make_stack(), clock)
    real_expire = gate.expire
    results: list[int | str] = []
    reaped = threading.Event()

    def expire() -> int:
        if not results:
            results.append("failed")
            raise StoreError("locked")
        expired = real_expire()
        results.append(expired)
        if expired:
            reaped.set()
        return expired

    monkeypatch.setattr(gate, "expire", expire)
    gate.acquire(Call("a", "inbound", N1))
    clock.advance(31)
    with caplog.at_level(logging.WARNING, logger="callgate.service"):
        async with serving(create_app(gate, reaper_interval_s=0.01)):
            # The reaper runs on the wall clock in a worker thread: wait for it, bounded.
            assert await asyncio.to_thread(reaped.wait, 10), results
    assert results[0] == "failed" and 1 in results
    assert any("store unavailable" in r.getMessage() for r in caplog.records)


async def test_unencodable_values_get_a_422_not_a_500(api: Api) -> None:
    """NaN priority and a lone surrogate in call_id are refused by name, never a 500."""
    nan = await api.client.post("/v1/calls", content=b'{"call_id": "x", "direction": '
                                b'"inbound", "number": "+15550000001", "priority": NaN}',
                                headers={"content-type": "application/json"})
    assert nan.status_code == 422 and nan.json()["detail"][0]["field"] == "body.priority"
    bad = await api.client.post("/v1/calls", content=b'{"call_id": "\\ud800", "direction": '
                                b'"inbound", "number": "+15550000001"}',
                                headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.call_id"
