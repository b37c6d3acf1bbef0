"""/docs and /redoc work offline: every asset comes from the gate itself, none from a CDN."""

from __future__ import annotations

import re
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tests.served import served
from tests.tools import require_tool

from callgate.config import parse_stack
from callgate.service.app import create_app
from callgate.testing import memory_gate, serving

EXAMPLE = Path(__file__).parents[2] / "examples" / "stack.toml"


class Links(HTMLParser):
    """Every URL a page's tags point at (src, href), and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.mark.anyio
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_name_no_outside_url_and_their_assets_load(page: str) -> None:
    """Each src/href is a path on the gate that answers 200 with content; no http(s):// anywhere."""
    app = create_app(memory_gate(parse_stack(tomllib.loads(EXAMPLE.read_text("utf-8")))))
    async with serving(app) as http:
        response = await http.get(page)
        assert response.status_code == 200
        links = Links()
        links.feed(response.text)
        assert links.urls, response.text
        assert not re.search(r"(https?:)?//[a-z0-9]", response.text, re.IGNORECASE), (
            response.text)
        for url in links.urls:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = await http.get(url)
            assert asset.status_code == 200, url
            if url.endswith(".png"):  # the favicon: a real image (412 bytes in some releases)
                assert asset.content.startswith(b"\x89PNG\r\n\x1a\n"), url
            else:
                assert len(asset.content) > 1000, url  # the real bundle, not a stub
        # Swagger UI's validator badge would be fetched from validator.swagger.io.
        assert page != "/docs" or '"validatorUrl": null' in "".join(links.scripts)


@pytest.mark.slow
def test_a_browser_with_no_outside_network_renders_every_route_in_docs(tmp_path: Path) -> None:
    """Headless Chromium, every host but 127.0.0.1 unresolvable, lists the API's operations."""
    chromium = require_tool("chromium", "chromium")
    with served(EXAMPLE, tmp_path / "gate.db", tmp_path / "serve.log",
                log_level="info", args=["--access-log"]) as server:  # what was fetched
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={tmp_path / 'chromium'}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=15000", "--dump-dom", f"{server.url}/docs"],
            capture_output=True, text=True, timeout=120, check=False)
        assert server.stop() == 0, server.output()
    assert done.returncode == 0, done.stderr[-2000:]
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', done.stdout))
    assert {"/v1/calls", "/v1/usage", "/v1/admin/reload", "/readyz"} <= paths, done.stdout[:2000]
    log = server.output()
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css",
                  "/openapi.json"):
        assert f'"GET {asset} HTTP/1.1" 200' in log
