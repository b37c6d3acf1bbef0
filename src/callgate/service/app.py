"""The HTTP API: a thin edge that turns JSON into gate calls and gate answers into JSON.

Every decision, refusals included, is an HTTP 200: a full layer is an answer, not an
error. Status codes other than 200 mean the *request* could not be decided: the caller
sent something wrong (404 unknown number, 409 a reused call id, 422 a bad field) or the
store is down (503). No stack trace ever reaches a client; the server log has it.

The gate is synchronous and thread-safe. The three hot routes (acquire, renew, release)
call it inline when its store lives in memory (a decision takes microseconds, and a
thread hop would cost more than the decision) and in a worker thread when the store does
I/O, so a slow SQLite transaction never blocks the event loop. Acquire and release are
plain Starlette routes (:mod:`callgate.service.routing`: no per-request parameter solving,
the same 422s, documented in the OpenAPI like the rest). The other routes are FastAPI's,
plain ``def``, which FastAPI runs in its threadpool.

Who may do what is in :mod:`callgate.service.auth` (bearer tokens per account, an admin
token; open when none are configured); ``/healthz``, ``/readyz``, ``/metrics`` and the
docs are always open. Every decision is counted (:mod:`callgate.service.metrics`) and
logged (:mod:`callgate.service.logs`) here, in one place, whichever edge asked: the JSON
API or the Twilio webhooks (:mod:`callgate.service.twilio`, served when the stack has a
``[twilio]`` table).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI, Query, Request, Response
from fastapi_offline import FastAPIOffline

from callgate import __version__
from callgate.config import Stack, load_stack
from callgate.errors import (
    CallConflictError,
    ConfigError,
    StoreError,
    UnknownNumberError,
    UnknownProviderError,
)
from callgate.gate import Gate
from callgate.model import Call, Decision, ReleaseResult, RenewResult, RenewStatus
from callgate.service.activity import Activity
from callgate.service.auth import (
    Authenticator,
    Principal,
    RequireToken,
    principal_of,
    visible_queue,
    visible_usage,
)
from callgate.service.body_limit import BodyLimit
from callgate.service.campaigns import Campaigns, campaigns_router
from callgate.service.dashboard import dashboard_router
from callgate.service.errors import (
    ApiError,
    field_error,
    install_error_handlers,
    invalid_body,
    jsonable,
)
from callgate.service.logs import log_decision
from callgate.service.metrics import Metrics
from callgate.service.openapi_docs import (
    EVERY_ROUTE_ERRORS,
    SECURED,
    WEBHOOK_ERRORS,
    document_bearer,
    route_errors,
)
from callgate.service.preflight import app_warnings, check_edges, webhooks_enabled
from callgate.service.routing import (
    HotJSONResponse,
    call_request,
    doc_route,
    document,
    hot_route,
)
from callgate.service.schemas import (
    CallRequest,
    DecisionOut,
    HealthOut,
    LeaseOut,
    ProviderErrorOut,
    ProviderErrorRequest,
    ReadyOut,
    ReleaseOut,
    ReloadOut,
    RenewOut,
    RenewRefusal,
    SettingsOut,
    retry_after_header,
)
from callgate.service.stream import STREAM_PATH, EventStreams, stream_router

log = logging.getLogger("callgate.service")

DOCS_ASSETS = "/docs/static"  # where the Swagger UI and ReDoc files are served

DESCRIPTION = """\
Admission control for AI phone agents: ask `POST /v1/calls` before connecting a call.
Every decision (admitted, queued, retry_later, rejected) is an HTTP 200 naming the layer,
scope and reason that decided it. Renew an admitted lease every `ttl_s / 3` seconds and
`DELETE` it when the call ends; poll a queued call by sending the same body again.
When the stack has `[[api.tokens]]`, every `/v1/` route needs `Authorization: Bearer <token>`:
an account token sees and changes only its own account's calls, an admin token everything.
"""


def _telemetry_off() -> dict[str, Any]:
    """``FastAPI(telemetry=...)`` turning off its per-request OpenTelemetry hooks, if it has them.

    FastAPI releases with native telemetry check, on every request, whether a tracer, meter
    or logger provider is configured (issue 16 measured about a tenth of the hot routes'
    throughput going there), and trace each request when one is. callgate's own metrics
    and decision log are its telemetry, so all of it is off; releases without the option
    get nothing to turn off.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False,
                          "operation_spans": False, "auto_configure": False}}


TELEMETRY_OFF = _telemetry_off()


class NoConfigError(Exception):
    """A reload was asked of a server started without a stack file (nothing to re-read)."""


def reloader(app: FastAPI) -> Callable[[], int]:
    """The app's reload (what ``POST /v1/admin/reload`` runs), for ``serve``'s SIGHUP.

    It returns the number of capped scopes now enforced and raises :class:`ConfigError`
    for a bad file (the running stack stays) or :class:`NoConfigError`.
    """
    reload_stack: Callable[[], int] = app.state.reload_stack
    return reload_stack


def create_app(
    gate: Gate,
    *,
    store_url: str = "",
    reaper_interval_s: float | None = None,
    config_path: str | None = None,
    insecure_webhooks: bool = False,
    stream_interval_s: float = 1.0,
    campaign_files: Sequence[str] = (),
) -> FastAPI:
    """The API for ``gate``.

    ``store_url`` is what ``/readyz`` reports and what a reload keeps (the store cannot
    change while running); ``config_path`` is the stack file ``/v1/admin/reload`` re-reads;
    with ``reaper_interval_s`` a background task expires due leases every that many
    (wall-clock) seconds, so queue heads are promoted even when no request comes in.
    ``insecure_webhooks`` skips the Twilio signature check (local testing only).
    ``stream_interval_s`` is the wall time between two events of ``/v1/usage/stream``;
    ``app.state.streams`` (:class:`EventStreams`) ends every open stream when closed.
    ``campaign_files`` are ``callgate dial`` state files shown at ``/v1/campaigns``
    (:mod:`callgate.service.campaigns`).

    Raises :class:`ConfigError` when a token's environment variable is unset or the
    ``[twilio]`` webhooks could not work (no stream URL, no auth token, bad proxy entry).
    """
    authenticator = Authenticator(check_edges(gate.stack, config_path, insecure_webhooks))
    metrics = Metrics(gate)
    webhooks = webhooks_enabled(gate.stack)
    streams = EventStreams(stream_interval_s)
    campaigns = Campaigns(campaign_files)
    # Swagger UI and ReDoc from assets bundled in fastapi-offline, served by the gate
    # itself: /docs works on a host with no internet access (FastAPI's default is a CDN).
    # No validator badge: Swagger UI would fetch it from validator.swagger.io.
    app = FastAPIOffline(
        title="callgate", version=__version__, description=DESCRIPTION,
        lifespan=_reaper(gate, reaper_interval_s, metrics), static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None}, **TELEMETRY_OFF,
    )
    app.state.streams = streams
    install_error_handlers(app, metrics)
    app.add_middleware(RequireToken, authenticator=authenticator,
                       query_token_paths=frozenset({STREAM_PATH}))
    app.add_middleware(BodyLimit)  # outermost: an oversized body is refused before anything
    reload_lock = threading.Lock()

    run = _runner(gate)

    async def decide(call: Call, ttl_s: float | None, edge: str) -> Decision:
        """Ask the gate, then count and log the answer (the one place every edge goes through)."""
        decision: Decision = await run(gate.acquire, call, ttl_s=ttl_s)
        if decision.lease is not None:
            account = decision.lease.account
        else:  # the number was gated just now; a reload may have dropped it since
            spec = gate.stack.numbers.get(call.number)
            account = "" if spec is None else spec.account
        repeat = metrics.decided(decision, account)
        log_decision(decision, call, account, edge=edge, repeat=repeat)
        return decision

    async def end(call_id: str, account: str | None) -> ReleaseResult:
        result: ReleaseResult = await run(gate.release, call_id, account)
        metrics.released(call_id, account, result)
        return result

    async def heartbeat(call_id: str, account: str | None, ttl_s: float | None) -> RenewResult:
        result: RenewResult = await run(gate.renew, call_id, account, ttl_s)
        return result

    async def acquire(request: Request) -> Response:
        """May this call start now? Every decision is a 200; poll a queued call likewise."""
        body = await call_request(request)
        principal = principal_of(request)
        call = body.to_call()
        _check_number(gate.stack, principal, call.number)
        try:
            decision = await decide(call, body.ttl_s, "api")
        except CallConflictError as exc:
            raise ApiError(409, {"detail": str(exc), "error": "call_conflict"}) from None
        except UnknownNumberError as exc:
            raise ApiError(404, {"detail": str(exc), "error": "unknown_number"}) from None
        except UnknownProviderError as exc:
            raise ApiError(422, {"detail": str(exc), "error": "unknown_provider"}) from None
        retry_after = retry_after_header(decision.retry_after_s)
        headers = None if retry_after is None else {"Retry-After": retry_after}
        return HotJSONResponse(DecisionOut.document(decision), headers=headers)

    @app.post(
        # ":path": a call id may hold "/" (any visible ASCII), sent as %2F
        "/v1/calls/{call_id:path}/renew", tags=["calls"], openapi_extra=SECURED,
        responses={**route_errors("POST", "/v1/calls/{call_id}/renew"),
                   404: {"model": RenewRefusal, "description": "No live lease to renew."}},
    )
    async def renew(
        call_id: str,
        request: Request,
        account: str | None = None,
        ttl_s: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    ) -> RenewOut:
        """Heartbeat: push the lease's expiry to now + ttl_s (every ttl_s / 3 seconds)."""
        account = _acting_for(principal_of(request), account)
        result = await heartbeat(call_id, account, ttl_s)
        if result.status is not RenewStatus.RENEWED or result.lease is None:
            raise ApiError(404, RenewRefusal.of(call_id, result.status).model_dump())
        await campaigns.arecord(call_id, "agent")  # a campaign call's agent is talking
        return RenewOut(call_id=call_id, lease=LeaseOut.of(result.lease))

    async def release(request: Request) -> Response:
        """The call ended (or the caller hung up while queued); idempotent.

        An id this token's account does not hold answers like an id never seen
        (nothing released, nothing cancelled): ids of other accounts do not leak.
        """
        account = _acting_for(principal_of(request), request.query_params.get("account"))
        result = await end(request.path_params["call_id"], account)
        return HotJSONResponse({"released": result.released, "cancelled": result.cancelled})

    # The hot routes first: each request is matched against the routes in order, and
    # FastAPI has already put its docs' routes in the list.
    app.router.routes[:0] = [
        hot_route("/v1/calls", "POST", acquire),
        # ":path": a call id may hold "/" (any visible ASCII), sent as %2F
        hot_route("/v1/calls/{call_id:path}", "DELETE", release),
    ]
    document(app, [
        doc_route("/v1/calls", "POST", _acquire_signature, described_by=acquire,
                  tags=["calls"], openapi_extra=SECURED, response_model=DecisionOut,
                  responses=route_errors("POST", "/v1/calls")),
        doc_route("/v1/calls/{call_id:path}", "DELETE", _release_signature,
                  described_by=release, tags=["calls"], openapi_extra=SECURED,
                  response_model=ReleaseOut,
                  responses=route_errors("DELETE", "/v1/calls/{call_id}")),
    ])
    document_bearer(app)

    @app.get("/v1/usage", tags=["state"], openapi_extra=SECURED,
             responses=route_errors("GET", "/v1/usage"))
    def usage(request: Request) -> dict[str, Any]:
        """Every layer's in-use, cap and queued; windows; key cooldowns (an account: its own)."""
        principal = principal_of(request)
        document = gate.usage()
        if principal.account is None:
            return document
        return visible_usage(document, gate.stack, principal.account)

    @app.get("/v1/settings", tags=["state"], openapi_extra=SECURED,
             responses=route_errors("GET", "/v1/settings"))
    def settings() -> SettingsOut:
        """Lease timings: ``GateClient.adopt`` renews a webhook's lease to ``lease_ttl_s``."""
        stack = gate.stack
        return SettingsOut(lease_ttl_s=stack.gate.lease_ttl, dial_ttl_s=stack.outbound.dial_ttl,
                           webhook_lease_ttl_s=stack.webhook_lease_ttl(),
                           max_call_duration_s=stack.gate.max_call_duration)

    @app.get("/v1/queue", tags=["state"], openapi_extra=SECURED,
             responses=route_errors("GET", "/v1/queue"))
    def queue(request: Request) -> dict[str, Any]:
        """Every queued call, per number in queue order (an account token: its own)."""
        principal = principal_of(request)
        entries = gate.queue()
        if principal.account is not None:
            entries = visible_queue(entries, principal.account)
        return {"entries": entries}

    @app.post("/v1/providers/{provider}/keys/{key}/errors", tags=["providers"],
              openapi_extra=SECURED,
              responses=route_errors("POST", "/v1/providers/{provider}/keys/{key}/errors"))
    def provider_error(provider: str, key: str, body: ProviderErrorRequest,
                       request: Request) -> ProviderErrorOut:
        """A provider answered 429/5xx (cool the key down) or 401/403 (disable it until reload)."""
        _require_admin(principal_of(request), "report provider key errors")
        try:
            until = gate.report_provider_error(provider, key, body.status, body.retry_after_s)
        except UnknownProviderError as exc:
            raise ApiError(404, {"detail": str(exc), "error": "unknown_provider"}) from None
        except ValueError as exc:
            refused = field_error("body.status", body.status, str(exc))
            raise ApiError(422, invalid_body([refused])) from None
        metrics.cooled(provider, key, disabled=math.isinf(until))
        return ProviderErrorOut(provider=provider, key=key,
                                cooldown_until=None if math.isinf(until) else until)

    def reload_stack() -> int:
        """Re-read the stack file and tokens (the one reload: the API's and SIGHUP's).

        Returns the number of capped scopes now enforced. Raises :class:`ConfigError` for a
        bad file (logged; the running stack and tokens stay) and :class:`NoConfigError`
        when the server was started without a stack file.
        """
        if config_path is None:
            raise NoConfigError("no config file to reload: this server was started "
                                "without a stack file")
        with reload_lock:
            try:
                stack = load_stack(config_path, store=store_url or None)
                tokens = check_edges(stack, config_path, insecure_webhooks, webhooks=webhooks)
            except ConfigError as exc:
                log.error("reload refused, the running stack is unchanged: %s", exc)
                raise
            if stack.gate.store != gate.stack.gate.store:
                log.warning("reload: gate.store changed to %r; a new store needs a restart",
                            stack.gate.store)
            if webhooks_enabled(stack) and not webhooks:
                log.warning("reload: [twilio] was added; restart to serve the webhooks")
            gate.reload(stack)
            authenticator.replace(tokens)
        layers = len(Gate.limits_for(stack).caps)
        log.info("reloaded %s: %d capped scopes", config_path, layers)
        return layers

    app.state.reload_stack = reload_stack

    @app.post("/v1/admin/reload", tags=["admin"], openapi_extra=SECURED,
              responses=route_errors("POST", "/v1/admin/reload"))
    def reload(request: Request) -> ReloadOut:
        """Re-read the stack file; leases and queues are kept, a bad file changes nothing."""
        _require_admin(principal_of(request), "reload the stack")
        try:
            layers = reload_stack()
        except NoConfigError as exc:
            raise ApiError(409, {"detail": str(exc), "error": "no_config"}) from None
        except ConfigError as exc:
            issues = [{"path": i.path, "value": jsonable(i.value), "message": i.message}
                      for i in exc.issues]
            raise ApiError(422, {"detail": f"{exc}\nthe running stack is unchanged",
                                 "error": "invalid_stack", "issues": issues}) from None
        return ReloadOut(reloaded=True, layers=layers)

    @app.get("/healthz", tags=["health"], responses=route_errors("GET", "/healthz", secured=False))
    def healthz() -> HealthOut:
        """The process is up."""
        return HealthOut(status="ok")

    @app.get("/readyz", tags=["health"],
             responses=route_errors("GET", "/readyz", secured=False))
    def readyz() -> ReadyOut:
        """The store answers: this process can decide calls."""
        try:
            gate.ping()
        except StoreError as exc:
            raise ApiError(503, {"status": "store_unavailable", "detail": str(exc)}) from None
        return ReadyOut(status="ready", store=public_url(store_url or gate.stack.gate.store))

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text exposition."},
                        **route_errors("GET", "/metrics", secured=False)})
    def prometheus() -> Response:
        """Prometheus metrics: occupancy read from the store at scrape time, and event counters."""
        return Response(metrics.render(), media_type=metrics.content_type)

    app.include_router(stream_router(gate, metrics, streams))
    app.include_router(dashboard_router())
    # always routed, so the OpenAPI documents them; empty without serve --campaigns
    app.include_router(campaigns_router(campaigns))

    if webhooks:
        from callgate.service.twilio import twilio_router

        app.include_router(twilio_router(gate, decide=decide, release=end, renew=heartbeat,
                                         insecure=insecure_webhooks, campaigns=campaigns),
                           responses={**EVERY_ROUTE_ERRORS, **WEBHOOK_ERRORS})
    for warning in app_warnings(gate.stack, insecure_webhooks):
        log.warning("%s", warning)
    return app


# What the hot routes read by hand, as FastAPI signatures: the OpenAPI's view of them.
def _acquire_signature(body: CallRequest) -> DecisionOut:
    raise NotImplementedError  # documentation only, never served


def _release_signature(call_id: str, account: str | None = None) -> ReleaseOut:
    raise NotImplementedError  # documentation only, never served


def _require_admin(principal: Principal, action: str) -> None:
    if not principal.admin:
        raise ApiError(403, {"detail": f"token {principal.name!r} may not {action}: that "
                                       "needs an admin token", "error": "forbidden"})


def _acting_for(principal: Principal, account: str | None) -> str | None:
    """The account a renew or release acts in: an account token's own, else ``?account=``."""
    if principal.account is None:
        return account
    if account is not None and account != principal.account:
        raise ApiError(403, {"detail": f"token {principal.name!r} acts only for account "
                                       f"{principal.account!r}, not {account!r}",
                             "error": "forbidden"})
    return principal.account


def _check_number(stack: Stack, principal: Principal, number: str) -> None:
    """An account token may only ask for its account's numbers; others look unknown (404)."""
    spec = stack.numbers.get(number)
    if principal.account is not None and spec is not None and spec.account != principal.account:
        detail = f"number {number!r} is not in the stack; add it under [numbers] to gate it"
        raise ApiError(404, {"detail": detail, "error": "unknown_number"})


def _runner(gate: Gate) -> Callable[..., Awaitable[Any]]:
    """How the hot routes call the gate: inline for a memory store, else in a thread."""
    if not gate.store_does_io:
        async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return inline

    async def threaded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return threaded


def public_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to show on a health page)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


# the reaper -------------------------------------------------------------------------
def _reaper(
    gate: Gate, interval_s: float | None, metrics: Metrics
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_file_activity(metrics.activity))]
        if interval_s:
            tasks.append(asyncio.create_task(_reap(gate, interval_s, metrics)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return lifespan


async def _file_activity(activity: Activity) -> None:
    """File the headroom page's decision counts once a (wall) second."""
    while True:
        await asyncio.sleep(1.0)
        activity.roll()


async def _reap(gate: Gate, interval_s: float, metrics: Metrics) -> None:
    """Expire due leases every ``interval_s`` seconds; a failing store is logged, not fatal."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            expired = await asyncio.to_thread(gate.expire)
        except StoreError as exc:
            metrics.store_error("reaper")
            log.warning("reaper: store unavailable (will retry in %g s): %s", interval_s, exc)
            continue
        except Exception:
            log.exception("reaper: unexpected error (will retry in %g s)", interval_s)
            continue
        if expired:
            log.info("reaper: %d lease(s) expired and their slots freed", expired)
