"""The example alert rules and Grafana dashboard: valid, complete, and adding up across gates."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.tools import require_tool

from callgate.config import parse_stack
from callgate.gate import Gate
from callgate.service.app import create_app
from callgate.stores import SqliteStore
from callgate.testing import FakeClock, memory_gate, serving

EXAMPLES = Path(__file__).parents[2] / "examples"
RULES = EXAMPLES / "prometheus-rules.yaml"
CONFIG = EXAMPLES / "prometheus.yaml"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
ALERTS = {"CallgateLayerNearCap", "CallgateQueueWaitHigh", "CallgateStoreDown",
          "CallgateLeaseExpiriesRising", "CallgateProviderKeyDisabled"}
# The store's truth, the same on every gate of one store: never summed across gates.
STORE_WIDE = ("callgate_slots_in_use", "callgate_slots_cap", "callgate_queue_length",
              "callgate_leases", "callgate_window_events", "callgate_window_limit",
              "callgate_provider_keys_cooling", "callgate_provider_key_disabled",
              "callgate_lease_expiries_total")
N1, N2 = "+15550000001", "+15550000002"
STACK = f"""
[gate]
lease_ttl = "30s"
poll_timeout = "1h"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 10

[accounts.acme]
plan = "p"

[providers.llm]
keys = ["key-a", "key-b"]
sessions_per_key = 5

[inbound]
queue_max = 5
max_wait = "1h"

[numbers."{N1}"]
account = "acme"
trunk = "t"
max_concurrent = 2

[numbers."{N2}"]
account = "acme"
trunk = "t"
max_concurrent = 2
windows = [{{ direction = "outbound", limit = 30, per = "1h" }}]
"""


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def all_queries() -> list[str]:
    return [expr for _, expr in panel_queries(dashboard())] + [r["expr"] for r in rules()]


def promtool() -> str:
    return require_tool("promtool", "prometheus")


# the files themselves --------------------------------------------------------------------
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` passes on examples/prometheus-rules.yaml, all five rules found."""
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_promtool_accepts_the_example_config() -> None:
    """`promtool check config` passes on examples/prometheus.yaml (and the rules it loads)."""
    done = subprocess.run([promtool(), "check", "config", str(CONFIG)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.anyio
async def test_the_example_relabelling_drops_per_number_series_and_keeps_the_rest() -> None:
    """Applied to a real scrape, the drop rules remove number occupancy and windows only."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    drops = [(rule["source_labels"], re.compile(rule["regex"]))
             for rule in config["scrape_configs"][0]["metric_relabel_configs"]
             if rule["action"] == "drop"]
    gate = memory_gate(parse_stack(tomllib.loads(STACK)), FakeClock())
    async with serving(create_app(gate)) as http:
        body = {"call_id": "out-1", "direction": "outbound", "number": N2}  # has a window
        assert (await http.post("/v1/calls", json=body)).json()["decision"] == "admitted"
        text = (await http.get("/metrics")).text
    kept, dropped = [], []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {**sample.labels, "__name__": sample.name}
            gone = any(regex.fullmatch(";".join(labels.get(name, "") for name in names))
                       for names, regex in drops)  # Prometheus anchors its regexes
            (dropped if gone else kept).append((sample.name, sample.labels))
    number_scoped = [(n, labels) for n, labels in kept if n != "callgate_queue_length"
                     and labels.get("scope", "").startswith("+")]
    assert number_scoped == []
    assert {(labels["layer"], labels["scope"]) for n, labels in kept
            if n == "callgate_slots_cap"} == {("trunk", "t"), ("account", "acme"),
                                              ("provider", "llm"), ("provider", "llm:key-a"),
                                              ("provider", "llm:key-b")}
    assert {n for n, _ in dropped} == {"callgate_slots_in_use", "callgate_slots_cap",
                                       "callgate_window_events", "callgate_window_limit"}


@pytest.mark.anyio
async def test_the_rules_and_dashboard_use_only_metrics_a_gate_exports() -> None:
    """Every callgate_* name in a rule or panel is in a real scrape; every alert asked for ships."""
    assert {rule["alert"] for rule in rules()} == ALERTS
    gate = memory_gate(parse_stack(tomllib.loads(STACK)), FakeClock())
    async with serving(create_app(gate)) as http:
        text = (await http.get("/metrics")).text
    # A labelled family with no sample yet (no decision made) is still declared (# TYPE).
    families = set(re.findall(r"^# TYPE (callgate_[a-z_]+)", text, flags=re.MULTILINE))
    used = {name for q in all_queries() for name in re.findall(r"callgate_[a-z_]+", q)}
    missing = {name for name in used if name not in families
               and re.sub(r"_(total|bucket|count|sum)$", "", name) not in families}
    assert used and missing == set()


def test_store_wide_series_are_aggregated_with_max_never_summed() -> None:
    """Each store-wide metric in a panel or rule sits directly inside max (by ...)."""
    inside_max = re.compile(r"max(\s+by\s*\([^)]*\))?\s*\(\s*((rate|increase)\(\s*)?$")
    for expr in all_queries():
        for name in STORE_WIDE:
            for found in re.finditer(rf"\b{name}\b", expr):
                assert inside_max.search(expr[:found.start()]), f"{name} not under max: {expr}"


def test_the_dashboard_defines_what_it_uses_and_uses_what_it_defines() -> None:
    """Variables: datasource, job, account, layer, each used; no import inputs; thresholds set."""
    board = dashboard()
    assert "__inputs" not in board
    text = json.dumps(board["panels"]) + json.dumps(board["templating"])
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "job", "account", "layer"}
    used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))
    assert used == variables
    for panel in board["panels"]:
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        steps = [step["value"] for step in defaults.get("thresholds", {}).get("steps", [])]
        if defaults.get("unit") == "percentunit":  # utilisation: warn at 80%, alarm at 90%
            assert steps == [None, 0.8, 0.9], panel["title"]
        elif panel["type"] == "stat" and panel["title"] != "Calls admitted":  # a count
            assert len(steps) >= 2, panel["title"]


# two gates on one store ------------------------------------------------------------------
async def _scrape(http: httpx.AsyncClient) -> list[tuple[str, dict[str, str], float]]:
    text = (await http.get("/metrics")).text
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("callgate_") and not s.name.endswith("_created")]


async def _two_gates_on_one_store(tmp_path: Path) -> dict[str, list[tuple[str, dict[str, str],
                                                                            float]]]:
    """Two gates share one SQLite file: N1 full with one caller on hold, one lease expired,
    one caller promoted after 40 s, key-b disabled. Both gates' scrapes, by instance."""
    stack = parse_stack(tomllib.loads(STACK))
    clock = FakeClock()
    stores = [SqliteStore(tmp_path / "shared.db", Gate.limits_for(stack)) for _ in "ab"]
    gates = [Gate(stack, store, clock) for store in stores]
    try:
        async with serving(create_app(gates[0])) as a, serving(create_app(gates[1])) as b:
            async def ask(http: httpx.AsyncClient, call_id: str, number: str) -> str:
                body = {"call_id": call_id, "direction": "inbound", "number": number}
                decision: str = (await http.post("/v1/calls", json=body)).json()["decision"]
                return decision

            assert await ask(a, "c1", N1) == "admitted"
            assert await ask(b, "c2", N1) == "admitted"
            assert await ask(b, "c3", N1) == "queued"
            assert await ask(a, "c4", N2) == "admitted"  # never renewed: it will expire
            clock.advance(20)
            for call_id in ("c1", "c2"):
                assert (await a.post(f"/v1/calls/{call_id}/renew")).status_code == 200
            clock.advance(20)  # c4 is past its 30 s lease
            assert (await a.delete("/v1/calls/c1")).json()["released"]
            assert await ask(b, "c3", N1) == "admitted"  # promoted after 40 s on hold
            assert await ask(b, "c5", N1) == "queued"
            report = await a.post("/v1/providers/llm/keys/key-b/errors", json={"status": 401})
            assert report.status_code == 200
            scrapes = {"a": await _scrape(a), "b": await _scrape(b)}
    finally:
        for store in stores:
            store.close()
    leases = [v for name, _, v in scrapes["a"] + scrapes["b"] if name == "callgate_leases"]
    assert leases == [2, 2]  # each gate exports the store's truth
    return scrapes


def _series(scrapes: dict[str, list[tuple[str, dict[str, str], float]]]) -> list[dict[str, str]]:
    """promtool input series: gauges hold their scraped value for 30 minutes; counters grow
    by their scraped value every minute, as if the scenario repeated each minute."""
    series = []
    for instance, samples in scrapes.items():
        for name, labels, value in samples:
            labels = {**labels, "job": "callgate", "instance": instance}
            selector = name + "{" + ",".join(
                f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"
            counter = name.endswith(("_total", "_bucket", "_count", "_sum"))
            series.append({"series": selector,
                           "values": f"0+{value!r}x30" if counter else f"{value!r}x30"})
    return series


def _dashboard_expr(title: str) -> str:
    """A panel's query with every variable at its "All" value."""
    expr = next(e for t, e in panel_queries(dashboard()) if t == title)
    return re.sub(r"\$(job|account|layer)\b", ".*", expr)


def test_two_gates_on_one_store_add_up_and_fire_the_alerts(tmp_path: Path) -> None:
    """promtool on two real gates' scrapes: panels show the store's truth once; alerts fire."""
    tool = promtool()
    scrapes = anyio.run(_two_gates_on_one_store, tmp_path)
    at = "20m"

    def expect(expr: str, *samples: tuple[str, float]) -> dict[str, Any]:
        return {"expr": expr, "eval_time": at,
                "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}

    firing = 'count by (alertname, layer, scope, provider, key) (ALERTS{alertstate="firing"})'
    tests = [{
        "interval": "1m",
        "input_series": _series(scrapes),
        "promql_expr_test": [
            expect("sum(callgate_leases)", ("{}", 4)),  # what summing the gates would show
            expect("max(callgate_leases)", ("{}", 2)),
            expect(_dashboard_expr("Calls admitted"), ("{}", 2)),
            expect(_dashboard_expr("Calls on hold"), ("{}", 1)),
            expect(_dashboard_expr("Fullest scope"), ("{}", 1)),
            expect(_dashboard_expr("Store reachable"), ("{}", 1)),
            expect(_dashboard_expr("Keys resting"), ("{}", 1)),
            expect(_dashboard_expr("Keys disabled"), ("{}", 1)),
            expect(firing,
                   (f'{{alertname="CallgateLayerNearCap", layer="number", scope="{N1}"}}', 1),
                   ('{alertname="CallgateQueueWaitHigh"}', 1),
                   ('{alertname="CallgateLeaseExpiriesRising"}', 1),
                   ('{alertname="CallgateProviderKeyDisabled", provider="llm", key="key-b"}', 1)),
        ],
    }, {
        "interval": "1m",  # the store goes away under gate "a": only "a" says so
        "input_series": [
            {"series": 'callgate_store_up{job="callgate", instance="a"}', "values": "1x5 0x10"},
            {"series": 'callgate_store_up{job="callgate", instance="b"}', "values": "1x15"},
        ],
        "promql_expr_test": [
            expect('count by (alertname, instance) (ALERTS{alertstate="firing"})'.replace(
                "ALERTS{", 'ALERTS{alertname="CallgateStoreDown", '),
                   ('{alertname="CallgateStoreDown", instance="a"}', 1)) | {"eval_time": "10m"},
        ],
    }]
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m",
                                         "tests": tests}), encoding="utf-8")
    done = subprocess.run([tool, "test", "rules", str(test_file)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
