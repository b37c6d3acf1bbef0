"""SIGHUP reloads a served gate's stack file, exactly as ``POST /v1/admin/reload`` does.

    signal   what ``callgate serve`` does
    TERM     stop accepting, finish the requests in flight, close the store, exit 0 (uvicorn)
    INT      the same (Ctrl-C); a second INT stops without waiting (uvicorn)
    HUP      re-read the stack file and the tokens; leases and queued callers are kept;
             a bad file is logged and the running stack stays

uvicorn owns TERM and INT while it serves. HUP's default action would kill the process
with no drain, so :func:`reload_on_hangup` installs a handler for the time the server
runs. The handler only sets a flag: the reload itself (a TOML read and a write of the
caps to the store, which may be a network round trip) runs in a worker thread, never in
the event loop nor inside a signal handler. Several HUPs that arrive during one reload
coalesce into one more reload, so the last file written is always the one applied.

A signal reaches one process: each gate of a fleet sharing one Redis reloads its own file
when it gets its own HUP (``systemctl reload``, ``docker compose kill -s HUP``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from callgate.errors import ConfigError, StoreError

log = logging.getLogger("callgate.serve")


def hold_hangups() -> threading.Event:
    """From now on a SIGHUP is remembered, not fatal: call first thing in ``serve``.

    Between the start of ``serve`` and :func:`reload_on_hangup` (reading the stack, opening
    the store, building the app) a HUP would otherwise kill the process; the stack read at
    start may already be stale by then. The returned event, passed on to
    :func:`reload_on_hangup`, turns such a HUP into one reload as soon as serving starts.
    """
    wanted = threading.Event()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        wanted.set()

    if threading.current_thread() is threading.main_thread():  # else signals are not ours
        signal.signal(signal.SIGHUP, on_hangup)
    return wanted


@contextlib.contextmanager
def reload_on_hangup(reload: Callable[[], int], source: str | None,
                     held: threading.Event | None = None) -> Iterator[None]:
    """While inside, SIGHUP runs ``reload`` (returns capped scopes) in a worker thread.

    ``source`` names the stack file in the log; a HUP already ``held`` (see
    :func:`hold_hangups`) reloads at once. Must be entered on the main thread (only it may
    install signal handlers); the previous handler is restored on exit.
    """
    wanted = threading.Event()
    if held is not None and held.is_set():
        wanted.set()
    stopping = False

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        wanted.set()  # nothing else here: a signal handler may interrupt any bytecode

    def worker() -> None:
        while True:
            wanted.wait()
            if stopping:
                return
            wanted.clear()
            _reload_logged(reload, source)

    thread = threading.Thread(target=worker, name="callgate-sighup-reload", daemon=True)
    thread.start()
    previous = signal.signal(signal.SIGHUP, on_hangup)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
        stopping = True
        wanted.set()
        # A reload in progress finishes (it holds the app's reload lock) before the
        # caller closes the store; it is bounded by the store's own timeouts.
        thread.join()


def _reload_logged(reload: Callable[[], int], source: str | None) -> None:
    """One reload on SIGHUP; every outcome is logged, none escapes (the server keeps serving)."""
    log.info("SIGHUP: reloading %s", source or "the stack")
    try:
        layers = reload()
    except ConfigError:
        return  # the app's reload has logged every problem; the running stack stays
    except StoreError as exc:
        log.error("SIGHUP: reload failed, the store is unavailable (the running stack stays; "
                  "send SIGHUP again once it is back): %s", exc)
        return
    except Exception:
        log.exception("SIGHUP: reload failed unexpectedly; the running stack stays")
        return
    log.debug("SIGHUP: %d capped scopes enforced", layers)  # the reload logged the rest
