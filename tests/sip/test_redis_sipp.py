"""The SIP edge on a Redis store beside a served HTTP gate: one set of caps for both.

Real processes: a Redis server (tests/stores/redis_server.py), ``callgate serve`` and
``callgate sip`` on it, SIPp as caller and agent. Skips without redis-server or SIPp
(fails under CI, which installs both).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.served import served
from tests.sip import sipp
from tests.sip.test_edge_sipp import NUMBER, ok, rig_for
from tests.stores import redis_server

pytestmark = pytest.mark.slow


def _in_use(http: httpx.Client, url: str) -> int:
    usage: dict[str, Any] = http.get(f"{url}/v1/usage").json()
    return int(next(row["in_use"] for row in usage["layers"] if row["scope"] == NUMBER))


def _acquire(http: httpx.Client, url: str, call_id: str) -> dict[str, Any]:
    response = http.post(f"{url}/v1/calls", json={
        "call_id": call_id, "direction": "inbound", "number": NUMBER})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_sip_and_http_admissions_share_the_caps_of_one_redis_store(tmp_path: Path) -> None:
    """A call held over HTTP makes SIP answer 486; a call held over SIP makes HTTP refuse."""
    sipp.require()
    redis_server.require()
    store = f"{redis_server.shared_url()}?prefix=t{secrets.token_hex(8)}"
    with rig_for(tmp_path, extra=("--store", store), queue_max=0) as rig, \
            served(rig.config, tmp_path / "unused.db", tmp_path / "serve.log",
                   args=("--store", store)) as server, \
            httpx.Client(timeout=10.0) as http:
        assert _acquire(http, server.url, "http-1")["decision"] == "admitted"
        refused = rig.scenario("uac_refused.xml", code="486", retry="45", layer="number",
                               reason="queue_full")
        ok(rig.caller(refused, name="refused").wait())
        assert http.delete(f"{server.url}/v1/calls/http-1").status_code == 200

        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        caller = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "3000"))
        rig.until("the SIP admission, seen over HTTP", lambda: _in_use(http, server.url) == 1)
        answer = _acquire(http, server.url, "http-2")
        assert (answer["decision"], answer["layer"], answer["reason"]) == (
            "rejected", "number", "queue_full")
        ok(caller.wait())
        ok(agent.wait())
        rig.until("the SIP release, seen over HTTP", lambda: _in_use(http, server.url) == 0)
        assert rig.releases() == ["caller_bye"]
