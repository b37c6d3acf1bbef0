"""Close what a test opened, after it: ``closing(store)`` (tests/conftest.py does the closing).

A Redis client left to the garbage collector may be collected in a cycle whose sockets are
finalized first: an "unclosed socket" ResourceWarning, an error in this suite, raised in
whichever test happens to be running then.
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)

OPENED: list[Closeable] = []


def closing(thing: C) -> C:
    """``thing``, to be closed when the current test ends."""
    OPENED.append(thing)
    return thing


def close_opened() -> None:
    while OPENED:
        OPENED.pop().close()
