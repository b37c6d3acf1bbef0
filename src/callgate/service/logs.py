"""Structured logs: one JSON object per line, and one line per decision.

Every answer the gate gives at an edge is logged on the ``callgate.decisions`` logger with
the call id, account, number, outcome, layer, scope and reason (INFO; a repeated poll of a
call already on hold is DEBUG, so a queue of callers polling every few seconds does not
drown the log). ``callgate serve --log-format json`` renders every record as one JSON
line (``ts``, ``level``, ``logger``, ``message`` and the record's fields), ready for Loki,
Elasticsearch or CloudWatch; ``text`` keeps the classic one-line format.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime
from typing import Any, Literal

from callgate.model import Call, Decision

decisions = logging.getLogger("callgate.decisions")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["json", "text"]


class JsonFormatter(logging.Formatter):
    """Each record as one JSON line; fields passed as ``extra={"fields": {...}}`` are merged."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, separators=(",", ":"))


def configure(level: int, fmt: LogFormat) -> None:
    """Send every logger's records to stderr in ``fmt`` at ``level`` (for ``serve``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_decision(decision: Decision, call: Call, account: str, *, edge: str,
                 repeat: bool = False) -> None:
    """One line for one decision (DEBUG for ``repeat``: another poll of a call on hold)."""
    level = logging.DEBUG if repeat else logging.INFO
    if not decisions.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "call_id": decision.call_id, "account": account, "number": call.number,
        "direction": call.direction, "outcome": decision.outcome.value,
        "layer": None if decision.layer is None else decision.layer.value,
        "scope": decision.scope, "reason": decision.reason.value, "edge": edge,
    }
    if decision.queue is not None:
        fields["position"] = decision.queue.position
        fields["estimated_wait_s"] = decision.queue.estimated_wait_s
    if decision.retry_after_s is not None and math.isfinite(decision.retry_after_s):
        fields["retry_after_s"] = decision.retry_after_s
    if decision.lease is not None:
        fields["keys"] = dict(decision.lease.keys)
    decisions.log(
        level, "%s %s: %s at %s %s (%s)", call.direction, decision.call_id,
        decision.outcome.value, fields["layer"], decision.scope, decision.reason.value,
        extra={"fields": fields},
    )


class MaskQueryTokens(logging.Filter):
    """Masks ``token=...`` in a record's arguments (uvicorn's access log prints the query)."""

    PATTERN = re.compile(r"([?&]token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1***", arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        return True


def mask_query_tokens(logger_name: str = "uvicorn.access") -> None:
    """Keep bearer tokens sent as ``?token=`` (the event stream's) out of ``logger_name``."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, MaskQueryTokens) for f in logger.filters):
        logger.addFilter(MaskQueryTokens())
