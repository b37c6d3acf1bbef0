"""``callgate status``: a running gate's usage document as tables, busiest scopes first.

    $ callgate status --url http://127.0.0.1:8080
    callgate at http://127.0.0.1:8080: 7 leases, 2 on hold, 0 expired unreleased
    ┃ layer   ┃ scope         ┃ in use ┃ cap ┃  use ┃ queued ┃
    │ account │ bright-dental │      5 │   5 │ 100% │      2 │
    │ number  │ +14155550101  │      2 │   4 │  50% │      0 │

It reads ``GET /v1/usage`` (and ``GET /v1/queue`` with ``--queue``) with the same bearer
token as any client (``--token`` or ``CALLGATE_TOKEN``; an account token sees only its
account); ``--reload`` first asks ``POST /v1/admin/reload`` (an admin token). ``--json``
prints the documents as the gate sent them; ``--watch`` redraws every ``--interval``
until Ctrl-C (or ``--count`` refreshes), keeps going through a failed refresh, and with
``--json`` prints one document per line. Nothing here decides anything: the gate's answer
is shown as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from callgate.flags import duration_flag

TOKEN_ENV = "CALLGATE_TOKEN"
URL_ENV = "CALLGATE_URL"
DEFAULT_URL = "http://127.0.0.1:8080"
MIN_INTERVAL_S = 0.5  # a watch never polls the gate faster than this
T = TypeVar("T")
LAYER_ORDER = {"trunk": 0, "number": 1, "account": 2, "provider": 3, "resource": 4}


class StatusError(click.ClickException):
    """The gate could not be asked, or refused: one line for the user, exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class Snapshot:
    """What one refresh read from the gate."""

    usage: dict[str, Any]
    queue: list[dict[str, Any]] | None = None

    def document(self) -> dict[str, Any]:
        """The ``--json`` document: the usage as the gate sent it, plus the queue if asked."""
        if self.queue is None:
            return self.usage
        return {**self.usage, "queue": self.queue}


# asking the gate ----------------------------------------------------------------------
def _answer(http: httpx.Client, method: str, path: str) -> Any:
    """The JSON answer to one request, or a :class:`StatusError` saying what went wrong."""
    url = f"{str(http.base_url).rstrip('/')}{path}"
    try:
        response = http.request(method, path)
    except httpx.HTTPError as exc:
        raise StatusError(f"cannot reach the gate at {url}: {exc or type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if response.status_code == 401:
        raise StatusError(f"{url}: 401, the gate needs a bearer token: pass --token or set "
                          f"{TOKEN_ENV}" + (f" ({detail})" if detail else ""))
    if response.status_code != 200 or body is None:
        shown = detail if detail is not None else response.text[:200]
        raise StatusError(f"{method} {url}: HTTP {response.status_code}: {shown}")
    return body


def fetch(http: httpx.Client, *, queue: bool) -> Snapshot:
    """Read the usage document (and the queue) once."""
    usage = _answer(http, "GET", "/v1/usage")
    entries = _answer(http, "GET", "/v1/queue")["entries"] if queue else None
    return Snapshot(usage, entries)


def reload(http: httpx.Client) -> dict[str, Any]:
    """Ask the gate to re-read its stack file (admin token); its answer."""
    answer: dict[str, Any] = _answer(http, "POST", "/v1/admin/reload")
    return answer


# drawing -------------------------------------------------------------------------------
def _share(in_use: float, cap: float) -> float:
    return in_use / cap if cap > 0 else (1.0 if in_use else 0.0)


def _percent(share: float) -> Text:
    style = "bold red" if share >= 0.9 else "yellow" if share >= 0.7 else ""
    return Text(f"{share:.0%}", style=style)


def busiest_first(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scopes ordered by share of cap in use, then queued callers, then layer and scope."""
    return sorted(layers, key=lambda row: (
        -_share(row["in_use"], row["cap"]), -row["queued"],
        LAYER_ORDER.get(row["layer"], len(LAYER_ORDER)), row["layer"], row["scope"]))


def render(snapshot: Snapshot, url: str, *, top: int = 20,
           reloaded: dict[str, Any] | None = None) -> RenderableType:
    """The tables of one snapshot; ``top`` caps the layer rows shown (0: all)."""
    usage = snapshot.usage
    layers = busiest_first(usage["layers"])
    queued = sum(row["queued"] for row in layers if row["layer"] == "number")
    when = datetime.fromtimestamp(usage["now"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts: list[RenderableType] = []
    if reloaded is not None:
        parts.append(Text(f"reloaded: {reloaded.get('layers')} capped scopes", style="green"))
    parts.append(Text(f"callgate at {url} ({when}): {usage['leases']} leases, {queued} on "
                      f"hold, {usage['expired_total']} expired unreleased"))
    shown = layers if top <= 0 else layers[:top]
    table = Table(title="Layers, busiest first", title_justify="left")
    for name, justify in (("layer", "left"), ("scope", "left"), ("in use", "right"),
                          ("cap", "right"), ("use", "right"), ("queued", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in shown:
        table.add_row(escape(row["layer"]), escape(row["scope"]), str(row["in_use"]),
                      str(row["cap"]), _percent(_share(row["in_use"], row["cap"])),
                      str(row["queued"]) if row["queued"] else "")
    parts.append(table)
    if len(layers) > len(shown):  # idle scopes sort last: what is cut is the least busy
        parts.append(Text(f"… {len(layers) - len(shown)} more scopes (--top 0 shows all)",
                          style="dim"))
    if usage["windows"]:
        ordered = sorted(usage["windows"], key=lambda w: (-_share(w["count"], w["limit"]),
                                                          w["scope"]))
        windows = Table(title="Rate windows, fullest first", title_justify="left")
        for name in ("scope", "count", "limit", "period", "use"):
            windows.add_column(name, justify="left" if name == "scope" else "right")
        for w in ordered if top <= 0 else ordered[:top]:
            windows.add_row(escape(w["scope"]), str(w["count"]), str(w["limit"]),
                            f"{w['period_s']:g} s", _percent(_share(w["count"], w["limit"])))
        parts.append(windows)
        if 0 < top < len(ordered):
            parts.append(Text(f"… {len(ordered) - top} more windows (--top 0 shows all)",
                              style="dim"))
    if usage["cooldowns"]:
        cooling = Table(title="Provider keys resting", title_justify="left")
        cooling.add_column("key")
        cooling.add_column("until", justify="right")
        for item in usage["cooldowns"]:
            until = item["until"]
            cooling.add_row(escape(item["scope"]), "disabled until reload" if until is None
                            else f"{max(0.0, until - usage['now']):.0f} s")
        parts.append(cooling)
    if snapshot.queue is not None:
        parts.extend(_queue_table(snapshot.queue, top))
    return Group(*parts)


def _queue_table(entries: list[dict[str, Any]], top: int) -> list[RenderableType]:
    if not entries:
        return [Text("queue: nobody on hold")]
    table = Table(title="On hold, per number in queue order", title_justify="left")
    for name in ("number", "position", "call id", "account", "priority", "waited"):
        table.add_column(name, justify="right" if name in ("position", "priority", "waited")
                         else "left")
    for entry in entries if top <= 0 else entries[:top]:
        table.add_row(escape(entry["number"]), str(entry["position"]), escape(entry["call_id"]),
                      escape(entry["account"]), str(entry["priority"]),
                      f"{entry['waited_s']:.0f} s")
    if 0 < top < len(entries):
        return [table, Text(f"… {len(entries) - top} more on hold (--top 0 shows all)",
                            style="dim")]
    return [table]


# watching -----------------------------------------------------------------------------
def refresh_loop(refresh: Callable[[], T], show: Callable[[T], None],
                 show_error: Callable[[str], None], *, interval_s: float, count: int | None,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """``show(refresh())`` every ``interval_s`` until Ctrl-C or ``count`` refreshes.

    A refresh that fails with :class:`StatusError` goes to ``show_error`` and the loop goes
    on (a gate restarting is what an operator watches for). Returns the refreshes made.
    """
    done = 0
    try:
        while count is None or done < count:
            if done:
                sleep(interval_s)
            try:
                result = refresh()
            except StatusError as exc:
                show_error(f"{exc.message} (retrying every {interval_s:g} s)")
            else:
                show(result)
            done += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error
    return done


# the command --------------------------------------------------------------------------
@click.command()
@click.option("--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True, show_envvar=True,
              metavar="URL", help="The gate's base URL.")
@click.option("--token", envvar=TOKEN_ENV, show_envvar=True, metavar="TOKEN",
              help="Bearer token (an account token sees only its account).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the usage document (with --queue, its 'queue') as JSON.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", default="2s", show_default=True, callback=duration_flag,
              metavar="DURATION", help=f"Time between refreshes (at least {MIN_INTERVAL_S} s).")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="With --watch: stop after N refreshes.")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True, metavar="N",
              help="Rows per table, busiest first (0: all).")
@click.option("--queue", "with_queue", is_flag=True, help="Also list the callers on hold.")
@click.option("--reload", "do_reload", is_flag=True,
              help="First ask the gate to re-read its stack file (admin token).")
@click.option("--timeout", default="5s", show_default=True, callback=duration_flag,
              metavar="DURATION", help="How long to wait for each answer.")
def status(url: str, token: str | None, as_json: bool, watch: bool, interval: float,
           count: int | None, top: int, with_queue: bool, do_reload: bool,
           timeout: float) -> None:
    """Show a running gate's usage: every layer's in-use and cap, busiest first."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r}: expected an http:// or https:// URL",
                                 param_hint="--url")
    if count is not None and not watch:
        raise click.BadParameter("only makes sense with --watch", param_hint="--count")
    if interval < MIN_INTERVAL_S:
        raise click.BadParameter(f"{interval:g} s: at least {MIN_INTERVAL_S} s, so a watch "
                                 "does not load the gate", param_hint="--interval")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as http:
        run(http, url=url, as_json=as_json, watch=watch, interval_s=interval, count=count,
            top=top, with_queue=with_queue, do_reload=do_reload)


def run(http: httpx.Client, *, url: str, as_json: bool = False, watch: bool = False,
        interval_s: float = 2.0, count: int | None = None, top: int = 20,
        with_queue: bool = False, do_reload: bool = False,
        console: Console | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """``callgate status`` on an open client (tests pass one bound to an app in-process)."""
    console = console or Console(highlight=False)
    reloaded = reload(http) if do_reload else None

    def document() -> dict[str, Any]:
        doc = fetch(http, queue=with_queue).document()
        return doc if reloaded is None else {**doc, "reload": reloaded}

    def view() -> RenderableType:
        return render(fetch(http, queue=with_queue), url, top=top, reloaded=reloaded)

    if not watch:
        if as_json:
            click.echo(json.dumps(document(), indent=2))
        else:
            console.print(view())
        return
    if as_json:  # one document per line, errors on stderr: the output stays parseable
        refresh_loop(document, lambda doc: click.echo(json.dumps(doc, separators=(",", ":"))),
                     lambda message: click.echo(message, err=True),
                     interval_s=interval_s, count=count, sleep=sleep)
        return
    with Live(console=console, auto_refresh=False) as live:
        refresh_loop(view, lambda shown: live.update(shown, refresh=True),
                     lambda message: live.update(Text(message, style="red"), refresh=True),
                     interval_s=interval_s, count=count, sleep=sleep)
