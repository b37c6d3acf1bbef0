"""``callgate sip``: the SIP edge as its own process, beside ``callgate serve`` on one store.

sippy runs its own event loop (a singleton dispatcher polled by its UDP threads), so the
edge is a process of its own rather than a task in ``serve``'s asyncio loop; it opens the
stack's store like ``serve`` does and asks a :class:`~callgate.gate.Gate` in-process.
"""

from __future__ import annotations

import logging
import signal

import click

from callgate.config import Stack, sip_uri
from callgate.errors import ConfigError, StoreError
from callgate.flags import finite

log = logging.getLogger("callgate.sip")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a (host, port) pair, or a clear error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:5060",
                                 param_hint="--listen")
    return host, int(port)


def check_forward(stack: Stack, forward: str | None) -> str | None:
    """The default forward URI; every number must have one (its own, its account's, this)."""
    if forward is not None:
        try:
            sip_uri(forward)
        except ValueError as exc:
            raise click.BadParameter(f"{forward!r}: {exc}", param_hint="--forward") from None
    missing = [n for n, spec in stack.numbers.items()
               if not (spec.sip_forward or stack.accounts[spec.account].sip_forward or forward)]
    if missing:
        raise click.UsageError(
            f"no SIP forward URI for {', '.join(missing)}: pass --forward SIP_URI, or set "
            "[sip] forward, or sip_forward on the number or its account")
    return forward


def _check_port_free(host: str, port: int) -> None:
    """Refuse a UDP port another process holds: sippy binds with SO_REUSEPORT, so a second
    edge on one port would silently get half of the first one's datagrams."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise click.UsageError(
                f"cannot listen on udp {host}:{port}: {exc.strerror or exc}") from None


@click.command()
@click.option("--config", "config", envvar="CALLGATE_CONFIG", metavar="PATH", show_envvar=True,
              help="The stack file (TOML).")
@click.option("--store", envvar="CALLGATE_STORE", metavar="URL", show_envvar=True,
              help="memory://, sqlite:///path.db or redis://...  [default: the stack's]")
@click.option("--listen", metavar="HOST:PORT", help="UDP address for INVITEs  "
              "[default: [sip] listen, else 127.0.0.1:5060]")
@click.option("--forward", metavar="SIP_URI",
              help="Where admitted calls go (the agent platform)  [default: [sip] forward]")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus /metrics on 127.0.0.1:PORT.")
@click.option("--log-level", type=click.Choice(["error", "warning", "info", "debug"],
                                               case_sensitive=False), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
# Tests only: run the edge's own SIP timers (session refresh/expiry, 182 re-send) this many
# times faster, so a session of 90 s (RFC 4028's minimum, still what the headers say) is
# tested in seconds. session_expires itself is never allowed below 90 s.
@click.option("--time-scale", type=finite(0.001, 1.0), default=1.0, hidden=True)
def sip(config: str | None, store: str | None, listen: str | None, forward: str | None,
        metrics_port: int | None, log_level: str, log_format: str, time_scale: float) -> None:
    """Gate inbound SIP calls: forward admitted INVITEs to the agent, hold or refuse the rest.

    Runs until SIGTERM or Ctrl-C. Media does not pass through the edge (SDP is relayed).
    """
    from callgate.cli import fail, read_stack

    try:
        from sippy.Core.EventDispatcher import ED2  # type: ignore[import-untyped]
        from sippy.Time.Timeout import Timeout  # type: ignore[import-untyped]
    except ImportError:
        fail("callgate sip needs the SIP stack: pip install 'callgate[sip]'", 2)

    from callgate.clock import system_clock
    from callgate.gate import Gate
    from callgate.service.app import public_url
    from callgate.service.logs import configure
    from callgate.service.metrics import Metrics
    from callgate.sip.b2bua import REAP_INTERVAL_S, Edge, EdgeSettings
    from callgate.sip.stack import EdgeTransactionManager
    from callgate.sip.stack import global_config as sippy_config
    from callgate.stores import open_shared_store

    stack = read_stack(config, store=store)
    host, port = parse_listen(listen or stack.sip.listen or "127.0.0.1:5060")
    forward = check_forward(stack, forward or stack.sip.forward)
    configure(getattr(logging, log_level.upper()), "json" if log_format == "json" else "text")
    url = stack.gate.store
    try:
        gate_store = open_shared_store(stack, Gate.limits_for(stack))
        gate = Gate(stack, gate_store, system_clock)
    except ConfigError as exc:
        fail(str(exc), 2)
    except (StoreError, ValueError) as exc:
        fail(f"cannot open the store {public_url(url)!r}: {exc}", 2)
    metrics = Metrics(gate)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, "127.0.0.1", registry=metrics.registry)

    _check_port_free(host, port)
    global_config = sippy_config(host, port)
    settings = EdgeSettings(forward, stack.sip.forward_timeout, stack.sip.codes,
                            session_expires_s=round(stack.sip.session_expires),
                            time_scale=time_scale)
    edge = Edge(gate, metrics, settings, global_config)
    try:
        global_config["_sip_tm"] = EdgeTransactionManager(global_config, edge.recv_request)
    except OSError as exc:
        fail(f"cannot listen on udp {host}:{port}: {exc.strerror or exc}", 2)
    Timeout(edge.reap, REAP_INTERVAL_S, -1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        ED2.regSignal(sig, ED2.breakLoop)
    log.info("callgate sip: listening on udp %s:%d, forwarding to %s, store %s",
             host, port, forward or "per-number URIs", public_url(url))
    try:
        ED2.loop()
    finally:
        for dialog in list(edge.dialogs.values()):
            # Leases of live calls are left to expire within one TTL: the media goes on
            # without us, and a restarted edge cannot take their dialogs back.
            dialog.timers.clear()
        gate_store.close()
    log.info("callgate sip: stopped (%d calls in progress left to their lease TTL)",
             len(edge.dialogs))
