"""The headroom page against a served gate, in Debian's Chromium (headless, via chromedriver).

Each test starts ``callgate serve`` as a real process (tests/service/test_serve.py) and a
fresh headless Chromium with its own profile under the test's tmp_path; Selenium is
pointed at the system ``chromedriver`` so Selenium Manager never runs (nothing is
downloaded). Without chromium, chromedriver or selenium the tests skip, except under CI
(``CI`` set), where they fail: ``.ci/run`` installs them. Waits poll the page with a
deadline: the page is a real process too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from tests.served import STOP_TIMEOUT_S, Served
from tests.service.test_serve import running

from callgate.service.auth import digest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.slow

WAIT_S = 20.0  # the most any one wait for the page may take
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1280,1000")
T = TypeVar("T")


# the browser ----------------------------------------------------------------------------
def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401  (only whether it is installed)
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if shutil.which("chromium") is None:
        return "chromium not found on PATH (apt-get install chromium)"
    if shutil.which("chromedriver") is None:
        return "chromedriver not found on PATH (apt-get install chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """A headless system Chromium with a fresh profile; skipped (failed under CI) without one."""
    why = browser_missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager stays offline
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager (which could download one) is never asked.
    service = Service(executable_path=str(shutil.which("chromedriver")),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, check: Callable[[WebDriver], T], what: str) -> T:
    """Poll ``check`` (a false answer: not yet) until it holds, at most WAIT_S."""
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(check, f"waited for {what}")


def gauges(driver: WebDriver, section: str = "layers") -> dict[str, dict[str, Any]]:
    """The gauges now drawn in ``#section``, by ``layer:scope`` (read in one script)."""
    rows: list[dict[str, Any]] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(g => ({layer: g.dataset.layer,"
        " scope: g.dataset.scope, in_use: +g.dataset.inUse, cap: +g.dataset.cap,"
        " level: g.dataset.level}))", f"#{section} .gauge")
    return {f"{row['layer']}:{row['scope']}": row for row in rows}


def events_seen(driver: WebDriver) -> int:
    return int(driver.execute_script("return +document.body.dataset.events"))


def next_event(driver: WebDriver) -> None:
    """Wait until the page has drawn an event it had not drawn yet."""
    seen = events_seen(driver)
    wait_for(driver, lambda d: events_seen(d) > seen, "the next event")


class Requests:
    """Every URL the page asked for, from Chromium's own network log (CDP), from now on."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self.urls: list[str] = []
        driver.get_log("performance")  # what the browser did before (its start page) is not ours

    def collect(self) -> list[str]:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.urls.append(message["params"]["request"]["url"])
        resources = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        self.urls += [url for url in resources if url not in self.urls]
        return self.urls

    def elsewhere(self) -> list[str]:
        """The URLs that would leave this machine: any but data: and those of 127.0.0.1."""
        return [url for url in self.collect()
                if urlsplit(url).scheme != "data" and urlsplit(url).hostname != "127.0.0.1"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def narrow(driver: WebDriver, width: int) -> None:
    """Lay the page out ``width`` CSS pixels wide (headless windows have a minimum width)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 1400, "deviceScaleFactor": 1, "mobile": False})


@contextmanager
def served(tmp_path: Path, stack: str) -> Iterator[Served]:
    """`callgate serve` on ``stack``; stopped with SIGTERM after the block (exit 0, no trace)."""
    config = tmp_path / "stack.toml"
    config.write_text(stack, encoding="utf-8")
    with running(config, tmp_path / "gate.db", tmp_path / "serve.log") as server:
        yield server
        if server.proc.poll() is None:
            assert server.stop() == 0, server.output()
    assert server.proc.returncode == 0, server.output()
    assert "Traceback" not in server.output()


def acquire(http: httpx.Client, server: Served, call_id: str, number: str,
            token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.post(f"{server.url}/v1/calls", headers=headers, json={
        "call_id": call_id, "direction": "inbound", "number": number})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def release(http: httpx.Client, server: Served, call_id: str) -> None:
    response = http.delete(f"{server.url}/v1/calls/{call_id}")
    assert response.status_code == 200 and response.json()["released"], response.text


# gauges follow the gate -----------------------------------------------------------------
N1 = "+15550000001"
N2 = "+15550000002"
STACK = f"""
[gate]
lease_ttl = "5m"
poll_timeout = "5m"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 10

[accounts.acme]
plan = "p"

[numbers."{N1}"]
account = "acme"
trunk = "t"
max_concurrent = 2

[numbers."{N2}"]
account = "acme"
trunk = "t"
max_concurrent = 3
windows = [{{ direction = "outbound", limit = 1, per = "1m" }}]

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 5

[inbound]
queue_max = 5
max_wait = "10m"
"""


@pytest.fixture
def gate_server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path, STACK) as server:
        yield server


def test_gauges_and_counts_follow_admissions_and_releases(
    browser: WebDriver, gate_server: Served, tmp_path: Path
) -> None:
    """Calls admitted, queued and released through the API move the page's gauges and counts."""
    requests = Requests(browser)
    browser.get(gate_server.url)
    wait_for(browser, lambda d: events_seen(d) >= 1, "the first event")
    assert browser.find_element("id", "status").text == "live"
    assert browser.find_element("id", "store").text == "store up"
    shown = gauges(browser)
    assert shown[f"number:{N1}"] == {"layer": "number", "scope": N1, "in_use": 0, "cap": 2,
                                     "level": "ok"}
    assert shown["trunk:t"]["cap"] == 10

    with httpx.Client(timeout=10.0) as http:
        assert [acquire(http, gate_server, f"c{i}", N1)["decision"] for i in (1, 2, 3)] == [
            "admitted", "admitted", "queued"]
        wait_for(browser, lambda d: gauges(d)[f"number:{N1}"]["in_use"] == 2, "N1 at 2")
        full = gauges(browser)
        assert full[f"number:{N1}"]["level"] == "full"
        assert next(iter(full)) == f"number:{N1}", "the fullest scope comes first"
        assert full["trunk:t"]["in_use"] == 2 and full["account:acme"]["in_use"] == 2
        wait_for(browser, lambda d: d.execute_script(
            "return document.querySelector('#queues [data-call=\"c3\"]') !== null"), "c3 on hold")
        totals = browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#outcomes .tile')]"
            ".map(t => [t.dataset.outcome, +t.dataset.total]))")
        assert totals == {"admitted": 2, "queued": 1, "retry_later": 0, "rejected": 0}
        refused = browser.execute_script(
            "return [...document.querySelectorAll('#refused .tile')].map(t => t.dataset.layer)")
        assert refused == ["number"]
        assert "last 5 min: number (1)" in browser.find_element("id", "top").text

        # an outbound call counts in N2's window; a 429 cools a provider key down
        outbound = http.post(f"{gate_server.url}/v1/calls", json={
            "call_id": "o1", "direction": "outbound", "number": N2, "remote": "+15559990000"})
        assert outbound.json()["decision"] == "admitted", outbound.text
        reported = http.post(f"{gate_server.url}/v1/providers/llm/keys/k2/errors",
                             json={"status": 429, "retry_after_s": 600})
        assert reported.status_code == 200, reported.text
        wait_for(browser, lambda d: gauges(d, "windows").get(f"window:{N2}:outbound:1m", {})
                 .get("in_use") == 1, "the window's count")
        assert gauges(browser, "windows")[f"window:{N2}:outbound:1m"]["level"] == "full"
        wait_for(browser, lambda d: d.execute_script(
            "return document.querySelector('#cooldowns [data-key=\"llm:k2\"]')?.textContent")
            or "", "the key's cooldown")
        cooling = browser.find_element("css selector", '#cooldowns [data-key="llm:k2"]').text
        assert re.fullmatch(r"llm:k2 \d\d:\d\d:\d\d \(in (9|10) min\)", cooling), cooling
        release(http, gate_server, "o1")

        release(http, gate_server, "c1")  # c3 is promoted into the freed slot
        wait_for(browser, lambda d: "nobody on hold" in d.find_element("id", "queue-count").text,
                 "the queue to empty")
        assert gauges(browser)[f"number:{N1}"]["in_use"] == 2
        release(http, gate_server, "c2")
        release(http, gate_server, "c3")
        wait_for(browser, lambda d: gauges(d)[f"number:{N1}"]["in_use"] == 0, "N1 back to 0")
        assert gauges(browser)["trunk:t"]["in_use"] == 0
    browser.save_screenshot(str(tmp_path / "headroom.png"))
    assert png_size(tmp_path / "headroom.png")[0] > 0
    assert requests.collect(), "the network log recorded the page's own requests"
    assert requests.elsewhere() == []


def test_the_page_says_when_the_gate_goes_away(
    browser: WebDriver, tmp_path: Path
) -> None:
    """When the stream drops (the gate stops) the page says so instead of showing stale data."""
    with served(tmp_path, STACK) as server:
        browser.get(server.url)
        wait_for(browser, lambda d: events_seen(d) >= 1, "the first event")
        assert server.stop() == 0, server.output()  # SIGTERM ends the stream
    wait_for(browser, lambda d: d.find_element("id", "status").get_attribute("data-state")
             == "error", "the page to notice")
    assert "reconnecting" in browser.find_element("id", "status").text


def test_the_page_shows_the_store_down_and_recovers(
    browser: WebDriver, gate_server: Served, tmp_path: Path
) -> None:
    """While another process holds the SQLite file the page says the store is down, keeps the
    last gauges (marked stale) and comes back by itself when the file is free again."""
    browser.get(gate_server.url)
    with httpx.Client(timeout=10.0) as http:
        assert acquire(http, gate_server, "held", N1)["decision"] == "admitted"
    wait_for(browser, lambda d: gauges(d)[f"number:{N1}"]["in_use"] == 1, "the admitted call")
    store = browser.find_element("id", "store")
    hog = sqlite3.connect(tmp_path / "gate.db", isolation_level=None)
    try:
        hog.execute("BEGIN IMMEDIATE")  # the gate's next read waits out its busy timeout
        wait_for(browser, lambda d: store.get_attribute("data-up") == "false", "store down")
        assert store.text.startswith("store DOWN: ")
        assert browser.execute_script("return document.body.dataset.stale") == "true"
        assert "gauges as of" in browser.find_element("id", "updated").text
        assert gauges(browser)[f"number:{N1}"]["in_use"] == 1  # the last known, greyed
    finally:
        hog.execute("ROLLBACK")
        hog.close()
    wait_for(browser, lambda d: store.get_attribute("data-up") == "true", "store up again")
    assert browser.execute_script("return document.body.dataset.stale") == "false"
    assert store.text == "store up"


# tokens ---------------------------------------------------------------------------------
A1, G1 = "+15550000101", "+15550000201"
ACME, GLOBEX = "acme-page-token", "globex-page-token"
TOKEN_STACK = f"""
[gate]
lease_ttl = "5m"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 4

[accounts.acme]
plan = "p"

[accounts.globex]
plan = "p"

[numbers."{A1}"]
account = "acme"
trunk = "t"
max_concurrent = 2

[numbers."{G1}"]
account = "globex"
trunk = "t"
max_concurrent = 2

[[api.tokens]]
name = "acme-page"
account = "acme"
sha256 = "{digest(ACME)}"

[[api.tokens]]
name = "globex-agents"
account = "globex"
sha256 = "{digest(GLOBEX)}"
"""


def test_an_account_token_sees_only_its_account(browser: WebDriver, tmp_path: Path) -> None:
    """The page asks for a token once, keeps it for the tab, and shows only that account."""
    with served(tmp_path, TOKEN_STACK) as server:
        requests = Requests(browser)
        with httpx.Client(timeout=10.0) as http:
            assert acquire(http, server, "g1", G1, GLOBEX)["decision"] == "admitted"
            assert acquire(http, server, "a1", A1, ACME)["decision"] == "admitted"
        browser.get(server.url)
        wait_for(browser, lambda d: d.find_element("id", "login").is_displayed(), "the token form")

        browser.find_element("id", "token").send_keys("not-a-token")
        browser.find_element("css selector", "#login button").click()
        wait_for(browser, lambda d: "refused" in d.find_element("id", "login-error").text,
                 "the refusal")

        browser.find_element("id", "token").send_keys(ACME)
        browser.find_element("css selector", "#login button").click()
        wait_for(browser, lambda d: events_seen(d) >= 1, "the first event")
        assert set(gauges(browser)) == {f"number:{A1}", "account:acme"}
        assert gauges(browser)[f"number:{A1}"]["in_use"] == 1
        assert browser.find_element("id", "account").text == "account acme"
        page_text = browser.find_element("tag name", "body").text
        assert G1 not in page_text and "globex" not in page_text
        assert browser.execute_script(
            "return sessionStorage.getItem('callgate.token')") == ACME

        browser.refresh()  # the tab keeps its token: no second question
        wait_for(browser, lambda d: events_seen(d) >= 1, "the first event after a reload")
        assert not browser.find_element("id", "login").is_displayed()
        assert set(gauges(browser)) == {f"number:{A1}", "account:acme"}
        assert requests.elsewhere() == []


# many numbers, a narrow screen ----------------------------------------------------------
MANY = 10_000
BUSY = f"+1555{7_777:07d}"
MANY_STACK = """
[gate]
lease_ttl = "5m"

[trunks.t]
max_concurrent = 20000

[plans.p]
max_concurrent = 20000

[accounts.acme]
plan = "p"

[number_defaults]
account = "acme"
trunk = "t"
max_concurrent = 2
""" + "".join(f'[numbers."+1555{i:07d}"]\n' for i in range(MANY))


def test_ten_thousand_numbers_fullest_first_with_a_filter_at_400_px(
    browser: WebDriver, tmp_path: Path
) -> None:
    """With 10,000 numbers the page draws the fullest few, filters, and fits 400 px."""
    with served(tmp_path, MANY_STACK) as server:
        with httpx.Client(timeout=10.0) as http:
            assert acquire(http, server, "busy", BUSY)["decision"] == "admitted"
        narrow(browser, 400)
        browser.get(server.url)
        wait_for(browser, lambda d: events_seen(d) >= 1, "the first event")
        shown = gauges(browser)
        assert len(shown) == 50
        assert next(iter(shown)) == f"number:{BUSY}", "half full: the fullest scope"
        assert "of 10,002 scopes" in browser.find_element("id", "layers-count").text

        assert browser.save_screenshot(str(tmp_path / "headroom-400px-fullest.png"))

        search = browser.find_element("id", "filter")
        search.send_keys("+15550001")  # +15550001000 ... +15550001999
        wait_for(browser, lambda d: "showing 50 of 1,000 scopes" in
                 d.find_element("id", "layers-count").text, "the filter")
        search.send_keys("230")
        wait_for(browser, lambda d: set(gauges(d)) == {"number:+15550001230"}, "one number")
        next_event(browser)  # a new event keeps the filter
        assert set(gauges(browser)) == {"number:+15550001230"}

        width = browser.execute_script("return [window.innerWidth, "
                                       "document.documentElement.scrollWidth]")
        assert width[0] == 400 and width[1] <= 400, f"horizontal overflow at 400 px: {width}"
        shot = tmp_path / "headroom-400px.png"
        assert browser.save_screenshot(str(shot))
        assert png_size(shot)[0] == 400


# SIGTERM with a page open ---------------------------------------------------------------
def test_sigterm_ends_open_streams_and_the_gate_exits(gate_server: Served) -> None:
    """A served gate with a stream open drains on SIGTERM: the stream ends cleanly, exit 0."""
    with httpx.Client(timeout=STOP_TIMEOUT_S) as http, \
            http.stream("GET", f"{gate_server.url}/v1/usage/stream") as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: usage"
        gate_server.proc.send_signal(signal.SIGTERM)
        rest = list(lines)  # ends when the server ends the stream; raises if it is cut off
        assert gate_server.proc.wait(timeout=STOP_TIMEOUT_S) == 0, gate_server.output()
    assert all(not line or line.startswith(("event:", "data:")) for line in rest)
    assert "graceful shutdown exceeded" not in gate_server.output()
