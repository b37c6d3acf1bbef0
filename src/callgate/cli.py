"""The ``callgate`` command: ``check`` a stack, ``serve`` the gate over HTTP (or ``sip``).

Every command reads the stack from ``--config PATH`` (or ``CALLGATE_CONFIG``; the flag
wins). A wrong stack prints each problem (key path, bad value, what is accepted) and
exits 2; a wrong flag exits 2 with click's message; anything unexpected prints one line
and exits 1 (``--debug`` or ``CALLGATE_DEBUG=1`` shows the traceback). No traceback
reaches a user otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callgate import __version__
from callgate.config import CONFIG_ENV, Stack, load_stack
from callgate.dialer.command import dial
from callgate.errors import ConfigError, StoreError
from callgate.flags import finite
from callgate.planning.capacity import (
    LayerCapacity,
    bottleneck,
    effective_capacity,
    layer_capacities,
)
from callgate.planning.command import plan
from callgate.sim.commands import loadtest, simulate
from callgate.sip.command import sip
from callgate.status import status

DEBUG_ENV = "CALLGATE_DEBUG"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

F = TypeVar("F", bound=Callable[..., Any])


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` in red on stderr (no markup, no traceback) and exit with ``code``."""
    _err_console().print(message, style="red", markup=False, soft_wrap=True)
    raise SystemExit(code)


def config_option(command: F) -> F:
    """``--config PATH``, from ``CALLGATE_CONFIG`` when the flag is not given."""
    return click.option(
        "--config", "config", envvar=CONFIG_ENV, metavar="PATH", show_envvar=True,
        help="The stack file (TOML).",
    )(command)


def read_stack(config: str | None, *, store: str | None = None) -> Stack:
    """The validated stack, or exit 2 with every problem listed."""
    if not config:
        raise click.UsageError(f"no stack file: pass --config PATH or set {CONFIG_ENV}")
    try:
        return load_stack(config, store=store)
    except ConfigError as exc:
        fail(str(exc), 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="callgate")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENV, show_envvar=True,
              help="Show the traceback of an unexpected error.")
def cli(debug: bool) -> None:
    """Admission control and capacity planning for AI phone agents."""


# check --------------------------------------------------------------------------------
@cli.command()
@config_option
@click.option("--store", envvar="CALLGATE_STORE", metavar="URL", show_envvar=True,
              help="Check as `serve --store URL` would run.")
@click.option("--host", envvar="CALLGATE_HOST", default="127.0.0.1", show_default=True,
              show_envvar=True, help="Check as `serve --host` would run.")
@click.option("--insecure-webhooks", is_flag=True,
              help="Check as `serve --insecure-webhooks` would run.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def check(config: str | None, store: str | None, host: str, insecure_webhooks: bool,
          strict: bool, as_json: bool) -> None:
    """Run every check `serve` runs, then print every layer's capacity (concurrent calls).

    Exits 2 on any problem `serve` would refuse to start with (each printed once), and
    prints warnings (exit 0; with --strict they are errors too).
    """
    from callgate.service.preflight import preflight  # the server's imports, only here

    stack = read_stack(config, store=store)
    findings = preflight(stack, host=host, insecure_webhooks=insecure_webhooks)
    errors = findings.errors + (findings.warnings if strict else ())
    if errors:
        fail(str(ConfigError(str(config), list(errors))), 2)
    for warning in findings.warnings:
        _err_console().print(f"warning: {warning}", style="yellow", markup=False,
                             soft_wrap=True)
    layers, effective, neck = layer_capacities(stack), effective_capacity(stack), bottleneck(stack)
    if as_json:
        document = {"layers": [asdict(row) for row in layers],
                    "effective": [asdict(row) for row in effective],
                    "bottleneck": asdict(neck),
                    "warnings": [str(warning) for warning in findings.warnings]}
        click.echo(json.dumps(document, indent=2))
        return
    console = Console(highlight=False)
    console.print(_table(f"{config}: capacity per scope (concurrent calls)", layers))
    console.print(_table("Effective capacity per layer, across the stack", effective))
    console.print(f"[green]stack OK.[/] Bottleneck: [bold]{escape(neck.layer)} "
                  f"{escape(neck.scope)}[/], {neck.cap} concurrent calls.")


def _table(title: str, rows: list[LayerCapacity]) -> Table:
    table = Table(title=escape(title), title_justify="left")
    table.add_column("layer")
    table.add_column("scope")
    table.add_column("cap", justify="right")
    table.add_column("note")
    for row in rows:
        table.add_row(escape(row.layer), escape(row.scope), str(row.cap), escape(row.note))
    return table


# serve --------------------------------------------------------------------------------
@cli.command()
@config_option
@click.option("--store", envvar="CALLGATE_STORE", metavar="URL", show_envvar=True,
              help="memory:// or sqlite:///path.db  [default: the stack's [gate] store]")
@click.option("--host", envvar="CALLGATE_HOST", default="127.0.0.1", show_default=True,
              show_envvar=True)
@click.option("--port", envvar="CALLGATE_PORT", type=click.IntRange(1, 65535), default=8080,
              show_default=True, show_envvar=True)
@click.option("--time-scale", envvar="CALLGATE_TIME_SCALE", show_envvar=True, default=1.0,
              type=finite(min=0, min_open=True), show_default=True,
              help="Run the gate's clock this many times faster (for compressed load tests).")
@click.option("--reaper-interval", type=finite(min=0), default=1.0, show_default=True,
              metavar="SECONDS", help="Wall seconds between expiry sweeps (0: no sweeps).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line (decisions included).")
@click.option("--access-log", envvar="CALLGATE_ACCESS_LOG", show_envvar=True, is_flag=True,
              help="Also log uvicorn's line per HTTP request (decisions are logged anyway).")
@click.option("--insecure-webhooks", is_flag=True,
              help="Do not check Twilio webhook signatures (local testing only).")
@click.option("--campaigns", "campaign_files", multiple=True, metavar="FILE.db",
              help="A `callgate dial` state file (repeatable): its progress at "
                   "GET /v1/campaigns, its calls' webhook results and opt-outs written to it.")
def serve(config: str | None, store: str | None, host: str, port: int, time_scale: float,
          reaper_interval: float, log_level: str, log_format: str, access_log: bool,
          insecure_webhooks: bool, campaign_files: tuple[str, ...]) -> None:
    """Serve the gate's HTTP API (OpenAPI docs at /docs) until SIGTERM or Ctrl-C.

    SIGHUP re-reads the stack file and its tokens, like POST /v1/admin/reload: leases and
    queued callers are kept, and a bad file is logged while the running stack stays.

    Without [[api.tokens]] in the stack the API is open, so it is served only on a
    loopback address; /healthz, /readyz and /metrics are always open.
    """

    from callgate.clock import Clock, ScaledClock, system_clock
    from callgate.gate import Gate
    from callgate.service.app import create_app, public_url, reloader
    from callgate.service.logs import configure, mask_query_tokens
    from callgate.service.preflight import bind_warnings, preflight
    from callgate.service.server import draining_server, server_config
    from callgate.service.signals import hold_hangups, reload_on_hangup
    from callgate.stores import open_store

    held = hold_hangups()  # a HUP during start-up reloads once serving, never kills
    stack = read_stack(config, store=store)
    # The very checks `callgate check` runs: each problem is printed once, here.
    findings = preflight(stack, host=host, insecure_webhooks=insecure_webhooks)
    if findings.errors:
        fail(str(ConfigError(str(config), list(findings.errors))), 2)
    url = stack.gate.store
    clock: Clock = system_clock if time_scale == 1 else ScaledClock(time_scale)
    try:
        gate_store = open_store(url, Gate.limits_for(stack))
        gate = Gate(stack, gate_store, clock)  # writes the stack's limits to the store
    except ConfigError as exc:
        fail(str(exc), 2)
    except (StoreError, ValueError) as exc:
        fail(f"cannot open the store {public_url(url)!r}: {exc}", 2)
    log_level = log_level.lower()
    configure(logging.DEBUG if log_level == "trace" else getattr(logging, log_level.upper()),
              "json" if log_format == "json" else "text")
    for warning in bind_warnings(stack, host):  # the app logs its own (app_warnings)
        logging.getLogger("callgate.serve").warning("%s", warning)
    try:
        try:
            app = create_app(gate, store_url=url,
                             reaper_interval_s=reaper_interval or None, config_path=config,
                             insecure_webhooks=insecure_webhooks,
                             campaign_files=campaign_files)
        except ConfigError as exc:
            fail(str(exc), 2)
        except sqlite3.Error as exc:
            fail(f"--campaigns: cannot open a state file: {exc}", 2)
        server = draining_server(server_config(app, host=host, port=port, log_level=log_level,
                                               json_logs=log_format == "json",
                                               access_log=access_log),
                                 app.state.streams)
        mask_query_tokens()  # after uvicorn.Config, which sets up uvicorn's loggers
        base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        banner = [f"callgate {__version__}: gating {config} with store {public_url(url)}"
                  + (f", clock x{time_scale:g}" if time_scale != 1 else ""),
                  f"listening on {base}", f"API docs: {base}/docs"]
        if log_format == "json":  # every line of output is JSON
            for line in banner:
                logging.getLogger("callgate.serve").info("%s", line)
        else:
            console = Console(highlight=False, soft_wrap=True)
            for line in banner:
                console.print(line, markup=False)
        _exit_cleanly_after_signals()
        with reload_on_hangup(reloader(app), config, held):
            server.run()
    finally:
        gate_store.close()
    if not server.started:
        fail("the server did not start; see the log above", 1)


def _exit_cleanly_after_signals() -> None:
    """Let SIGTERM/SIGINT end ``serve`` with exit 0 once uvicorn has drained.

    uvicorn handles both signals while it runs (stop accepting, finish in-flight requests
    within the graceful timeout), then restores the handlers it found and raises the
    signal again. With the default handlers that second signal would kill the process
    before the store is closed; these no-op handlers absorb it instead.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)


# the entry point --------------------------------------------------------------------
cli.add_command(plan)
cli.add_command(simulate)
cli.add_command(loadtest)
cli.add_command(status)
cli.add_command(dial)
cli.add_command(sip)


def main(argv: Sequence[str] | None = None) -> None:
    """``callgate``: run a command; no traceback reaches the user unless asked for."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="callgate", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (click.exceptions.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except Exception as exc:
        if "--debug" in args or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes"):
            traceback.print_exc()
        fail(f"callgate: unexpected error: {type(exc).__name__}: {exc} "
             f"(--debug or {DEBUG_ENV}=1 shows the traceback)", 1)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
