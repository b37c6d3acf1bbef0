"""sippy as the edge runs it: its settings, its message log, two small fixes.

sippy is configured through one dict (``global_config``) and a few class attributes; this
module builds both, and the transaction manager the edge runs (:class:`EdgeTransactionManager`:
sippy's, answering ``400 Bad Request`` to a request it cannot parse where sippy would drop it
silently). It also adjusts sippy in three places, each for a reason of our own:

- sippy prints a traceback to stdout for every datagram it cannot parse. Malformed SIP from
  the network is the sender's problem, not a crash, and no traceback may reach a user: it
  becomes one warning line.
- sippy compares a URI's ``transport`` parameter case-sensitively, so an agent whose Contact
  says ``transport=UDP`` (SIPp, several PBXes) could never be sent its BYE. URI parameters are
  case-insensitive (RFC 3261 19.1.4): the transport is lowercased where sippy reads it.
- sippy reads and writes each UDP socket with several threads (and ``SO_REUSEPORT``), so a
  180 and the 200 right behind it can leave in the other order; callers then see a 180
  after the call was answered. The edge's sockets get one reader and one writer: the
  event loop is one thread anyway, and order is kept.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import sippy.Core.EventDispatcher as dispatcher  # type: ignore[import-untyped]
import sippy.SipTransactionManager as manager  # type: ignore[import-untyped]
from sippy.SipConf import SipConf  # type: ignore[import-untyped]
from sippy.SipRequest import SipRequest  # type: ignore[import-untyped]
from sippy.SipURL import SipURL  # type: ignore[import-untyped]
from sippy.Udp_server import Udp_server, Udp_server_opts  # type: ignore[import-untyped]

log = logging.getLogger("callgate.sip")
USER_AGENT = "callgate"


class SipLog:
    """sippy's message logger, sent to ``callgate.sip.wire`` at DEBUG."""

    wire = logging.getLogger("callgate.sip.wire")

    def write(self, *args: Any, **kwargs: Any) -> None:
        if self.wire.isEnabledFor(logging.DEBUG):
            self.wire.debug("%s", "".join(str(a) for a in args))


def _one_line(msg: str, f: Any = sys.stdout, extra: Any = None) -> None:
    exc = sys.exc_info()[1]
    log.warning("sip: %s: %s: %s", msg, type(exc).__name__, exc)


_original_taddr = SipURL.getTAddr


def _taddr(self: Any) -> tuple[Any, Any]:
    address, transport = _original_taddr(self)
    return address, transport.lower() if isinstance(transport, str) else transport


def patch_sippy() -> None:
    """Apply the two fixes above (idempotent)."""
    manager.dump_exception = _one_line
    dispatcher.dump_exception = _one_line
    SipURL.getTAddr = _taddr
    SipConf.my_uaname = USER_AGENT


def global_config(host: str, port: int) -> dict[str, Any]:
    """sippy's settings for a UDP listener on ``host:port`` (its transaction manager is
    added under ``_sip_tm`` once created)."""
    patch_sippy()
    return {"_sip_address": host, "_sip_port": port, "_sip_logger": SipLog()}


class _InOrderUdpOpts(Udp_server_opts):  # type: ignore[misc]
    nworkers = 1  # one reader and one writer thread per socket: datagrams keep their order


class EdgeTransactionManager(manager.SipTransactionManager):  # type: ignore[misc]
    """sippy's transaction manager, answering ``400 Bad Request`` to a malformed request.

    sippy drops a request whose mandatory headers it cannot read (a CSeq that is not a
    number, a From without a URI), so the sender retransmits it for 32 s and never learns
    why. A request is read here first, with sippy's own parser; one that fails gets a 400
    (RFC 3261 8.2 / 21.4.1) when its Via can be read, and is dropped when not (there is
    nowhere to send an answer). Either way it never reaches the gate. Responses and
    well-formed requests go to sippy untouched.
    """

    model_udp_server = (Udp_server, _InOrderUdpOpts)

    def handleIncoming(self, data_in: bytes | str, ra: Any, server: Any, rtime: Any) -> None:
        if len(data_in) >= 32 and not _is_response(data_in):
            data = data_in.decode(errors="replace") if isinstance(data_in, bytes) else data_in
            problem = _unreadable(data)
            if problem is not None:
                self._refuse(data, problem, server)
                return
        super().handleIncoming(data_in, ra, server, rtime)

    def _refuse(self, data: str, problem: str, server: Any) -> None:
        try:
            req = SipRequest(data)
            resp = req.genResponse(400, "Bad Request")
            address = resp.getHFBody("via").getTAddr()
        except Exception:
            log.warning("sip: dropped an unreadable request (%s)", problem)
            return
        log.warning("sip: 400 Bad Request (%s)", problem)
        self.transmitMsg(server, resp, address, None)


def _is_response(data: bytes | str) -> bool:
    if isinstance(data, bytes):
        return data.startswith(b"SIP/2.0 ")
    return data.startswith("SIP/2.0 ")


def _unreadable(data: str) -> str | None:
    """Why sippy could not handle this request, or None when it can."""
    try:
        req = SipRequest(data)
        req.getTIds()
        for name in ("via", "from", "to", "call-id", "cseq"):
            req.getHFBody(name)
        req.getHFBody("from").getUrl()
        req.getHFBody("to").getUrl()
        req.getRURI()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
