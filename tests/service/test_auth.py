"""Bearer tokens: each account sees and changes only its own calls; admin sees everything."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from callgate.cli import cli
from callgate.config import Stack, parse_stack
from callgate.errors import ConfigError
from callgate.gate import Gate
from callgate.service.app import create_app
from callgate.service.auth import digest
from callgate.service.preflight import is_loopback
from callgate.testing import FakeClock, memory_gate, serving

pytestmark = pytest.mark.anyio

A1 = "+14155550100"  # acme
G1 = "+14155550200"  # globex
ACME = "acme-secret-token"
GLOBEX = "globex-secret-token"  # configured by its sha256, not an environment variable
ADMIN = "admin-secret-token"

TOKENS = f"""
[[api.tokens]]
name = "acme-agents"
account = "acme"
env = "ACME_API_TOKEN"

[[api.tokens]]
name = "globex-agents"
account = "globex"
sha256 = "{digest(GLOBEX)}"

[[api.tokens]]
name = "ops"
admin = true
env = "ADMIN_API_TOKEN"
"""

STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"

[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 5

[accounts.acme]
plan = "basic"

[accounts.globex]
plan = "basic"

[numbers."{A1}"]
account = "acme"
trunk = "t"
max_concurrent = 1
windows = [{{ direction = "outbound", limit = 5, per = "1m" }}]

[numbers."{G1}"]
account = "globex"
trunk = "t"
max_concurrent = 1

[providers.llm]
keys = ["key-a"]
sessions_per_key = 5
""" + TOKENS




@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_TOKEN", ACME)
    monkeypatch.setenv("ADMIN_API_TOKEN", ADMIN)


def make_stack(text: str = STACK) -> Stack:
    return parse_stack(tomllib.loads(text))




def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gate, Path]]:
    path = tmp_path / "stack.toml"
    path.write_text(STACK, encoding="utf-8")
    gate = memory_gate(make_stack(), FakeClock())
    async with serving(create_app(gate, config_path=str(path))) as http:
        yield http, gate, path


async def acquire(http: httpx.AsyncClient, token: str, call_id: str, number: str,
                  direction: str = "inbound") -> httpx.Response:
    body = {"call_id": call_id, "direction": direction, "number": number}
    return await http.post("/v1/calls", json=body, headers=bearer(token))


ROUTES = [("POST", "/v1/calls"), ("POST", "/v1/calls/x/renew"), ("DELETE", "/v1/calls/x"),
          ("GET", "/v1/usage"), ("GET", "/v1/queue"), ("POST", "/v1/admin/reload"),
          ("POST", "/v1/providers/llm/keys/key-a/errors")]


@pytest.mark.parametrize(("method", "url"), ROUTES)
async def test_no_or_unknown_token_is_401_with_www_authenticate(
    api: tuple[httpx.AsyncClient, Gate, Path], method: str, url: str
) -> None:
    """Without a token, or with one no tenant owns, every API route answers 401 Bearer."""
    http, gate, _ = api
    before = gate.usage()
    for headers, error in [({}, "unauthenticated"), (bearer("guess"), "invalid_token"),
                           ({"Authorization": f"Basic {ACME}"}, "unauthenticated")]:
        response = await http.request(method, url, headers=headers,
                                      json={"call_id": "x", "direction": "inbound",
                                            "number": A1, "status": 429})
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == error
    assert gate.usage() == before


@pytest.mark.parametrize("url", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
async def test_health_metrics_and_docs_stay_open(
    api: tuple[httpx.AsyncClient, Gate, Path], url: str
) -> None:
    """Health, readiness, metrics and the docs answer without a token."""
    http, _, _ = api
    assert (await http.get(url)).status_code == 200


async def test_an_account_token_acquires_only_its_own_numbers(
    api: tuple[httpx.AsyncClient, Gate, Path],
) -> None:
    """Another account's number answers exactly like a number that does not exist (404)."""
    http, gate, _ = api
    assert (await acquire(http, ACME, "a", A1)).json()["decision"] == "admitted"
    foreign = await acquire(http, ACME, "b", G1)
    missing = await acquire(http, ACME, "c", "+19995550000")
    assert (foreign.status_code, missing.status_code) == (404, 404)
    assert foreign.json() == {**missing.json(),
                              "detail": missing.json()["detail"].replace("+19995550000", G1)}
    assert gate.usage()["leases"] == 1


async def test_another_accounts_call_id_is_unknown_to_a_token(
    api: tuple[httpx.AsyncClient, Gate, Path],
) -> None:
    """Renew of globex's call with acme's token is 404 unknown; release frees nothing."""
    http, gate, _ = api
    assert (await acquire(http, GLOBEX, "g-call", G1)).json()["decision"] == "admitted"
    renew = await http.post("/v1/calls/g-call/renew", headers=bearer(ACME))
    assert (renew.status_code, renew.json()["status"]) == (404, "unknown")
    never = await http.post("/v1/calls/never-seen/renew", headers=bearer(ACME))
    assert never.json()["status"] == "unknown"
    release = await http.delete("/v1/calls/g-call", headers=bearer(ACME))
    assert release.json() == {"released": False, "cancelled": False}
    assert gate.usage()["leases"] == 1
    own = await http.delete("/v1/calls/g-call", headers=bearer(GLOBEX))
    assert own.json() == {"released": True, "cancelled": False}


async def test_an_account_token_may_not_name_another_account(
    api: tuple[httpx.AsyncClient, Gate, Path],
) -> None:
    """?account=globex with acme's token is 403; admin may name any account."""
    http, gate, _ = api
    await acquire(http, GLOBEX, "g-call", G1)
    for method, url in [("POST", "/v1/calls/g-call/renew"), ("DELETE", "/v1/calls/g-call")]:
        response = await http.request(method, url, params={"account": "globex"},
                                      headers=bearer(ACME))
        assert response.status_code == 403 and response.json()["error"] == "forbidden"
    assert gate.usage()["leases"] == 1
    admin = await http.delete("/v1/calls/g-call", params={"account": "globex"},
                              headers=bearer(ADMIN))
    assert admin.json()["released"] is True


async def test_the_same_call_id_in_two_accounts_is_two_calls(
    api: tuple[httpx.AsyncClient, Gate, Path],
) -> None:
    """Idempotency is per (account, call id): each tenant's 'call-1' is its own lease."""
    http, gate, _ = api
    assert (await acquire(http, ACME, "call-1", A1)).json()["decision"] == "admitted"
    assert (await acquire(http, GLOBEX, "call-1", G1)).json()["decision"] == "admitted"
    assert gate.usage()["leases"] == 2
    assert (await http.delete("/v1/calls/call-1", headers=bearer(ACME))).json()["released"]
    rows = {(r["layer"], r["scope"]): r["in_use"] for r in gate.usage()["layers"]}
    assert (rows[("number", A1)], rows[("number", G1)]) == (0, 1)
    renewed = await http.post("/v1/calls/call-1/renew", headers=bearer(GLOBEX))
    assert renewed.status_code == 200


async def test_usage_and_queue_show_an_account_only_its_own_scopes(
    api: tuple[httpx.AsyncClient, Gate, Path],
) -> None:
    """An account sees its numbers, its plan and its queue; shared layers and others are hidden."""
    http, _, _ = api
    await acquire(http, ACME, "a1", A1)
    await acquire(http, ACME, "a2", A1)  # queued
    await acquire(http, GLOBEX, "g1", G1)
    await acquire(http, GLOBEX, "g2", G1)  # queued
    await http.post("/v1/providers/llm/keys/key-a/errors", json={"status": 429},
                    headers=bearer(ADMIN))
    mine = (await http.get("/v1/usage", headers=bearer(ACME))).json()
    assert {(r["layer"], r["scope"]) for r in mine["layers"]} == {("number", A1),
                                                                  ("account", "acme")}
    assert [w["scope"] for w in mine["windows"]] == [f"{A1}:outbound:1m"]
    assert (mine["leases"], mine["cooldowns"]) == (1, [])
    queue = (await http.get("/v1/queue", headers=bearer(ACME))).json()["entries"]
    assert [(e["call_id"], e["account"]) for e in queue] == [("a2", "acme")]
    everything = (await http.get("/v1/usage", headers=bearer(ADMIN))).json()
    assert everything["leases"] == 2 and len(everything["cooldowns"]) == 1
    assert {r["layer"] for r in everything["layers"]} == {"trunk", "number", "account",
                                                          "provider"}
    all_queued = (await http.get("/v1/queue", headers=bearer(ADMIN))).json()["entries"]
    assert {e["call_id"] for e in all_queued} == {"a2", "g2"}


async def test_reload_and_provider_reports_need_admin(
    api: tuple[httpx.AsyncClient, Gate, Path],
) -> None:
    """An account token gets 403 on reload and key reports; the admin token succeeds."""
    http, gate, _ = api
    for url, body in [("/v1/admin/reload", None),
                      ("/v1/providers/llm/keys/key-a/errors", {"status": 429})]:
        refused = await http.post(url, json=body, headers=bearer(ACME))
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        assert (await http.post(url, json=body, headers=bearer(ADMIN))).status_code == 200
    assert len(gate.usage()["cooldowns"]) == 1


async def test_reload_swaps_tokens_and_a_bad_token_setup_changes_nothing(
    api: tuple[httpx.AsyncClient, Gate, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reload applies new tokens; one naming an unset variable is a 422 and the old ones stay."""
    http, _, path = api
    path.write_text(STACK.replace("ACME_API_TOKEN", "ACME_NEXT_TOKEN"), encoding="utf-8")
    refused = await http.post("/v1/admin/reload", headers=bearer(ADMIN))
    assert refused.status_code == 422
    assert "api.tokens[0].env" in refused.json()["detail"]
    assert (await acquire(http, ACME, "a", A1)).status_code == 200
    monkeypatch.setenv("ACME_NEXT_TOKEN", "rotated")
    assert (await http.post("/v1/admin/reload", headers=bearer(ADMIN))).status_code == 200
    assert (await acquire(http, ACME, "b", A1)).status_code == 401
    assert (await acquire(http, "rotated", "b", A1)).status_code == 200


def test_an_unset_token_variable_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app raises a ConfigError naming the token's env key and the variable."""
    monkeypatch.delenv("ADMIN_API_TOKEN")
    with pytest.raises(ConfigError) as caught:
        create_app(memory_gate(make_stack(), FakeClock()))
    assert "api.tokens[2].env = 'ADMIN_API_TOKEN'" in str(caught.value)


async def test_without_tokens_the_api_is_open() -> None:
    """With no [[api.tokens]] every route works without a token, as before tokens existed."""
    gate = memory_gate(make_stack(STACK.replace(TOKENS, "")), FakeClock())
    async with serving(create_app(gate)) as http:
        body: dict[str, Any] = {"call_id": "a", "direction": "inbound", "number": G1}
        assert (await http.post("/v1/calls", json=body)).json()["decision"] == "admitted"
        assert (await http.get("/v1/usage")).json()["leases"] == 1


# serve ----------------------------------------------------------------------------------
def test_serve_refuses_a_public_bind_without_tokens(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """serve --host 0.0.0.0 without tokens exits 2 with a clear message, before any bind."""
    import uvicorn

    def no_bind(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("serve must refuse before binding")

    monkeypatch.setattr(uvicorn.Server, "run", no_bind)
    config = tmp_path / "stack.toml"
    config.write_text(STACK.replace(TOKENS, ""), encoding="utf-8")
    db = tmp_path / "gate.db"
    runner = CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_STORE": None, "COLUMNS": "200"})
    result = runner.invoke(cli, ["serve", "--config", str(config), "--host", "0.0.0.0",
                                 "--store", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    assert "--host = '0.0.0.0': the stack has no [[api.tokens]]" in result.stderr
    assert "--host 127.0.0.1" in result.stderr
    assert not db.exists()  # not even the store was opened


def test_serve_exits_2_naming_an_unset_token_variable(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """serve with a token whose variable is unset exits 2 naming it, without serving."""
    import uvicorn

    def no_bind(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("serve must refuse before binding")

    monkeypatch.setattr(uvicorn.Server, "run", no_bind)
    # serve configures the root logger; keep this test process's logging as it is
    monkeypatch.setattr("callgate.service.logs.configure", lambda level, fmt: None)
    monkeypatch.delenv("ACME_API_TOKEN")
    config = tmp_path / "stack.toml"
    config.write_text(STACK, encoding="utf-8")
    runner = CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_STORE": None, "COLUMNS": "200"})
    result = runner.invoke(cli, ["serve", "--config", str(config), "--host", "0.0.0.0",
                                 "--store", "memory://"])
    assert result.exit_code == 2, result.output
    assert "api.tokens[0].env = 'ACME_API_TOKEN'" in result.stderr


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.10", False), ("gate.example.com", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Only loopback addresses (and localhost) count as a private bind."""
    assert is_loopback(host) is loopback
