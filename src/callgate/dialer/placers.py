"""Placers: what actually makes an outbound call once the gate has admitted it.

A placer gets one :class:`Attempt` (an admitted try, its lease already held) and answers
with a :class:`Placement`: the call's result and how long it held the line. The dialler
has committed the try as ``placing`` before it asks, so a placer is asked at most once
per try, even across crashes.

- :class:`DryRunPlacer` draws the result from the campaign's ``[dry_run]`` table with a
  generator seeded per call id (the same campaign and seed give the same outcomes, in any
  order, after any restart). With ``log`` it appends one line per placed call to a file
  opened ``O_APPEND`` and fsyncs it before answering: a record of placements kept outside
  the dialler's own state, which the crash test reads.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from callgate.dialer.campaign import CampaignFile, DryRunTable, TwilioPlacement
from callgate.errors import CallgateError

Result = Literal["answered", "busy", "no_answer", "failed", "abandoned", "machine", "unknown"]
RESULTS: tuple[Result, ...] = ("answered", "busy", "no_answer", "failed", "abandoned",
                               "machine", "unknown")
PLACERS = ("dry-run", "twilio")
# Twilio's status callback events: the final one carries CallStatus (and AnsweredBy)
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


class PlacerError(CallgateError):
    """A placer cannot start: its settings or credentials are missing (nothing dialled)."""


@dataclass(frozen=True)
class Attempt:
    """One admitted try: who, from which of our numbers, under which call id."""

    call_id: str
    row: int
    try_no: int
    phone: str
    caller_id: str
    ring_timeout_s: float
    extra: Mapping[str, str] = field(default_factory=dict)
    keys: Mapping[str, str] = field(default_factory=dict)  # provider keys the lease holds


@dataclass(frozen=True)
class Placement:
    """How a try went: its result, why, and seconds it rang and talked (its lease's life)."""

    result: Result
    reason: str
    ring_s: float = 0.0
    talk_s: float = 0.0
    # the provider took the call; its result comes later through the gate
    pending: bool = False
    provider_id: str = ""

    @property
    def duration_s(self) -> float:
        return self.ring_s + self.talk_s


class Placer(Protocol):
    """Places one call per :class:`Attempt`; must not raise for an ordinary failed call."""

    name: str

    def place(self, attempt: Attempt) -> Placement: ...

    def close(self) -> None: ...


class DryRunPlacer:
    """Outcomes drawn from ``[dry_run]``; nobody is called (see the module docstring)."""

    name = "dry-run"

    def __init__(self, table: DryRunTable, *, log: str | Path | None = None,
                 voicemail: str = "hangup") -> None:
        self._table = table
        self._voicemail = voicemail
        self._cumulative = (("answered", table.answer), ("busy", table.busy),
                            ("no_answer", table.no_answer), ("failed", table.failed))
        self._fd: int | None = None
        if log is not None:
            self._fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def place(self, attempt: Attempt) -> Placement:
        rng = random.Random(f"{self._table.seed}:{attempt.call_id}")
        draw, result = rng.random(), "failed"
        for name, share in self._cumulative:
            if draw < share:
                result = name
                break
            draw -= share
        table = self._table
        ring = min(rng.expovariate(1 / table.ring_time) if table.ring_time > 0 else 0.0,
                   attempt.ring_timeout_s)
        if self._fd is not None:
            line = json.dumps({"call_id": attempt.call_id, "row": attempt.row,
                               "phone": attempt.phone, "caller_id": attempt.caller_id})
            os.write(self._fd, (line + "\n").encode())
            os.fsync(self._fd)
        if result == "answered":
            talk = rng.expovariate(1 / table.talk_time) if table.talk_time > 0 else 0.0
            kind = rng.random()
            if kind < table.machine:
                if self._voicemail == "hangup":
                    return Placement("machine", "dry-run: answered by a machine; hung up", ring)
                return Placement("machine", "dry-run: answered by a machine; left to the "
                                            "agent", ring, talk)
            if kind < table.machine + table.abandon:
                return Placement("abandoned", "dry-run: abandoned", ring, talk)
            return Placement("answered", "dry-run: answered", ring, talk)
        if result == "no_answer":
            return Placement("no_answer", "dry-run: rang out", attempt.ring_timeout_s)
        if result == "busy":
            return Placement("busy", "dry-run: busy", 0.0)
        return Placement("failed", "dry-run: failed", 0.0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TwilioPlacer:
    """Places calls through Twilio's REST API (see the module docstring).

    ``api_url`` replaces the scheme and host of every request the ``twilio`` package makes
    (through its public ``http_client`` seam), so a test's stand-in, a proxy or another
    Twilio-compatible provider can receive them.
    """

    name = "twilio"

    def __init__(self, settings: TwilioPlacement, *, environ: Mapping[str, str] | None = None
                 ) -> None:
        from twilio.rest import Client  # type: ignore[import-untyped]

        env = os.environ if environ is None else environ
        missing = [name for name in (settings.account_sid_env, settings.auth_token_env)
                   if not env.get(name)]
        if missing:
            raise PlacerError(f"--placer twilio: environment variable(s) {missing} not set "
                              "(named by [twilio] account_sid_env / auth_token_env in the "
                              "campaign file)")
        self._settings = settings
        self._gate = settings.gate_url.rstrip("/")
        self._client = Client(env[settings.account_sid_env], env[settings.auth_token_env],
                              http_client=_rebased_http_client(settings.api_url))

    def place(self, attempt: Attempt) -> Placement:
        from urllib.parse import quote

        from twilio.base.exceptions import (  # type: ignore[import-untyped]
            TwilioException,
            TwilioRestException,
        )

        call_id = quote(attempt.call_id, safe="")
        options: dict[str, object] = {}
        if self._settings.machine_detection != "off":
            options["machine_detection"] = self._settings.machine_detection
        try:
            call = self._client.calls.create(
                to=attempt.phone, from_=attempt.caller_id,
                url=f"{self._gate}/twilio/outbound?call_id={call_id}", method="POST",
                status_callback=f"{self._gate}/twilio/status?call_id={call_id}",
                status_callback_event=STATUS_EVENTS, status_callback_method="POST",
                timeout=round(attempt.ring_timeout_s), **options)
        except TwilioRestException as exc:
            # Twilio refused the request (bad number, no funds...): nothing rang.
            return Placement("failed", f"twilio refused: {exc.status} {exc.code}: {exc.msg}")
        except TwilioException as exc:
            raise RuntimeError(f"twilio: {exc}") from exc  # the call may have gone out
        return Placement("unknown", f"twilio: {call.sid} {call.status}", pending=True,
                         provider_id=str(call.sid))

    def close(self) -> None:
        return None


def _rebased_http_client(api_url: str) -> Any:
    """The ``twilio`` package's own HTTP client, sending to ``api_url`` instead of Twilio."""
    from urllib.parse import urlsplit

    from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]

    target = urlsplit(api_url)

    class RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            parts = urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc)
            return super().request(method, parts.geturl(), *args, **kwargs)

    return RebasedHttpClient(timeout=10)


def make_placer(name: str, spec: CampaignFile, *, log: str | Path | None = None) -> Placer:
    """The placer called ``name``; raises ``ValueError`` naming what exists, or
    :class:`PlacerError` when its settings are missing."""
    if name == "dry-run":
        return DryRunPlacer(spec.dry_run, log=log, voicemail=spec.voicemail)
    if name == "twilio":
        if spec.twilio is None:
            raise PlacerError("--placer twilio needs a [twilio] table in the campaign file "
                              "(gate_url, and the names of the credentials' environment "
                              "variables); see the README, 'Outbound campaigns'")
        try:
            return TwilioPlacer(spec.twilio)
        except ImportError:
            raise PlacerError("--placer twilio needs the twilio package: pip install "
                              "'callgate[twilio]'") from None
    raise ValueError(f"unknown placer {name!r}; available: {', '.join(PLACERS)}")
