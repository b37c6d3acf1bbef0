"""Choosing the caller number: the one with the most room left (see :class:`Headroom`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callgate.config import Stack


class Headroom:
    """Room left for an outbound call on each caller number: the one rule for choosing.

    A number's room is the smallest ``(limit - used) / limit`` over its own and its trunk's
    concurrency and outbound windows (0 when one is full); the most room wins, ties going
    to the order of ``caller_ids``. The counts come from the gate's usage document and are
    kept current between reads with the dialler's own starts (:meth:`took`) and ends
    (:meth:`freed`), so a read every :attr:`max_age_s` is enough: it only orders the
    candidates, the gate still decides each call.
    """

    max_age_s = 30.0

    def __init__(self, stack: Stack, usage: Mapping[str, Any], numbers: tuple[str, ...],
                 read_at: float) -> None:
        self.read_at = read_at
        # [used, limit, how much an end gives back]: windows count starts, not calls
        by_scope: dict[str, list[list[int]]] = {}
        for layer in usage["layers"]:
            key = f"{layer['layer']}:{layer['scope']}"
            by_scope.setdefault(key, []).append([layer["in_use"], layer["cap"], 1])
        for window in usage["windows"]:
            scope, direction, _ = window["scope"].rsplit(":", 2)
            if direction in ("outbound", "any"):
                cell = [window["count"], window["limit"], 0]
                by_scope.setdefault(f"window:{scope}", []).append(cell)
        self._cells: dict[str, list[list[int]]] = {}
        for number in numbers:
            trunk = stack.numbers[number].trunk
            self._cells[number] = [
                cell for key in (f"number:{number}", f"trunk:{trunk}", f"window:{number}",
                                 f"window:{trunk}")
                for cell in by_scope.get(key, ())]

    def room(self, number: str) -> float:
        room = 1.0
        for used, limit, _ in self._cells[number]:
            if limit > 0:
                room = min(room, (limit - used) / limit)
        return max(room, 0.0)

    def pick(self, candidates: list[str]) -> str | None:
        """The candidate with the most room (ties: the first)."""
        best: tuple[float, str] | None = None
        for number in candidates:
            room = self.room(number)
            if best is None or room > best[0]:
                best = (room, number)
        return None if best is None else best[1]

    def took(self, number: str) -> None:
        for cell in self._cells[number]:
            cell[0] += 1

    def freed(self, number: str) -> None:
        for cell in self._cells[number]:
            cell[0] -= cell[2]
