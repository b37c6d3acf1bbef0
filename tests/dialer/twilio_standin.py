"""A stand-in for Twilio's REST API and its webhooks, on 127.0.0.1, for the placer's tests.

It speaks the wire format the ``twilio`` package uses (``POST
/2010-04-01/Accounts/{Sid}/Calls.json``, form body, HTTP basic auth, a JSON call resource
with status 201; a JSON error body with ``code`` for a refused number), records every
request, and then plays the call against the real served gate the way Twilio would: the
answer webhook (``Url``), the agent on the media stream renewing its lease (or never
starting), an opt-out from the agent, and the final status callback, each signed with
``RequestValidator``. What happens to a call is chosen by its ``To`` number.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

# what the callee (and the agent) do, by outcome
ANSWERED = {"completed", "abandoned", "machine", "optout"}
STATUS = {"completed": "completed", "abandoned": "completed", "machine": "completed",
          "optout": "completed", "busy": "busy", "no-answer": "no-answer",
          "failed": "failed", "canceled": "canceled"}
_PARAMETER = re.compile(r'<Parameter name="([^"]+)" value="([^"]*)"\s*/>')
_STREAM_STATUS = re.compile(r'<Stream [^>]*statusCallback="([^"]+)"')


@dataclass
class Played:
    """One call the stand-in took: the create request, and the gate's answers to it."""

    sid: str
    form: dict[str, str]
    outcome: str
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # (url, status, body)


class TwilioStandIn:
    """The REST API and the call's webhooks; ``outcomes`` maps a callee's number to what
    happens (see ``STATUS``; ``rejected`` answers the create request with Twilio's 400)."""

    def __init__(self, account_sid: str, auth_token: str, outcomes: dict[str, str], *,
                 agent_token: str | None = None) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.outcomes, self.agent_token = outcomes, agent_token
        self.calls: list[Played] = []
        self.refused: list[dict[str, str]] = []
        self.auth_failures = 0
        self.events: list[str] = []
        self._threads: list[threading.Thread] = []
        self._sids = itertools.count(1)
        self._validator = RequestValidator(auth_token)
        self.app = Starlette(routes=[Route("/2010-04-01/Accounts/{sid}/Calls.json",
                                           self._create, methods=["POST"])])

    # the REST API ---------------------------------------------------------------------------
    async def _create(self, request: Request) -> JSONResponse:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}" \
                or request.path_params["sid"] != self.account_sid:
            self.auth_failures += 1
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401,
                                 "more_info": "https://www.twilio.com/docs/errors/20003"},
                                status_code=401)
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        form: dict[str, str] = {}
        for key, value in pairs:  # a repeated field (StatusCallbackEvent): its first value
            form.setdefault(key, value)
        self.events = [value for key, value in pairs if key == "StatusCallbackEvent"]
        outcome = self.outcomes.get(form.get("To", ""), "completed")
        if outcome == "rejected":
            self.refused.append(form)
            return JSONResponse({"code": 21211, "message": f"The 'To' number {form['To']} is "
                                 "not a valid phone number.", "status": 400,
                                 "more_info": "https://www.twilio.com/docs/errors/21211"},
                                status_code=400)
        sid = f"CA{next(self._sids):032x}"
        played = Played(sid, form, outcome)
        self.calls.append(played)
        thread = threading.Thread(target=self._play, args=(played,), daemon=True)
        self._threads.append(thread)
        thread.start()
        return JSONResponse(status_code=201, content={
            "sid": sid, "account_sid": self.account_sid, "to": form["To"],
            "from": form["From"], "status": "queued", "direction": "outbound-api",
            "api_version": "2010-04-01", "date_created": None, "price": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json"})

    # the call, as Twilio plays it against the gate ---------------------------------------
    def _post(self, played: Played, url: str, params: dict[str, str],
              headers: dict[str, str] | None = None, *, signed: bool = True,
              json: Any = None) -> httpx.Response:
        sent = dict(headers or {})
        if signed:
            sent["X-Twilio-Signature"] = self._validator.compute_signature(url, params)
        if json is not None:
            answer = httpx.post(url, json=json, headers=sent, timeout=10.0)
        else:
            answer = httpx.post(url, data=params, headers=sent, timeout=10.0)
        played.answers.append((url, answer.status_code, answer.text))
        return answer

    def _play(self, played: Played) -> None:
        form, outcome = played.form, played.outcome
        base = {"CallSid": played.sid, "AccountSid": self.account_sid, "From": form["From"],
                "To": form["To"], "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
        detect = "MachineDetection" in form
        answered_by = ({"AnsweredBy": "machine_start" if outcome == "machine" else "human"}
                       if detect else {})
        if outcome in ANSWERED:
            answer = self._post(played, form["Url"], {**base, "CallStatus": "in-progress",
                                                       **answered_by})
            parameters = dict(_PARAMETER.findall(answer.text))
            stream = _STREAM_STATUS.search(answer.text)
            if outcome == "completed" and stream is not None:  # the stream connects
                self._post(played, stream.group(1).replace("&amp;", "&"), {
                    "AccountSid": self.account_sid, "CallSid": played.sid,
                    "StreamSid": f"MZ{played.sid[2:]}", "StreamEvent": "stream-started"})
            elif outcome in ("completed", "optout") and "renew_url" in parameters:
                self._agent(played, parameters)  # the agent's first renew
        final = {**base, "CallStatus": STATUS[outcome], **answered_by}
        if outcome in ANSWERED:
            final["CallDuration"] = "7"
        self._post(played, form["StatusCallback"], final)

    def _agent(self, played: Played, parameters: dict[str, str]) -> None:
        """The agent on the stream: its first renew marks its start; maybe an opt-out."""
        bearer = {"Authorization": f"Bearer {self.agent_token}"} if self.agent_token else {}
        self._post(played, parameters["renew_url"].replace("&amp;", "&"), {}, bearer,
                   signed=False)
        if played.outcome == "optout":
            renew = httpx.URL(parameters["renew_url"].replace("&amp;", "&"))
            name = parameters["call_id"].split(":")[0]
            url = str(renew.copy_with(path=f"/v1/campaigns/{name}/optout", query=None))
            self._post(played, url, {}, bearer, signed=False,
                       json={"call_id": parameters["call_id"]})

    def join(self) -> None:
        """Wait for every call's webhooks to have been sent (bounded)."""
        for thread in self._threads:
            thread.join(timeout=30)
