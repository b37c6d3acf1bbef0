"""Bearer tokens: who is asking, and which account's calls they may see and change.

A token is configured in ``[[api.tokens]]`` by name, scope (one ``account``, or
``admin = true``) and secret: either ``env`` (the name of an environment variable that
holds the token, read at start and on reload) or ``sha256`` (the hex digest of the token,
so the file holds no secret). A presented token is hashed and compared against every
configured digest in constant time.

    account token   acquire on its own numbers; renew, release, usage and queue of its own
                    account only (another account's number or call id answers as unknown)
    admin token     everything, plus reload and provider key reports

With no tokens configured the API is open (every request acts as admin); ``callgate
serve`` allows that only on a loopback bind. ``/healthz``, ``/readyz``, ``/metrics`` and
the docs never ask for a token, and Twilio webhooks authenticate by signature instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from callgate.config import Stack, Token
from callgate.errors import ConfigError, ConfigIssue


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: ``account`` None means every account (admin, or open mode)."""

    name: str
    account: str | None

    @property
    def admin(self) -> bool:
        return self.account is None


OPEN = Principal("open", None)


def digest(token: str) -> str:
    """The sha256 hex digest of a token, as ``[[api.tokens]] sha256`` expects it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Maps a presented bearer token to its :class:`Principal` (swap in new tokens on reload)."""

    def __init__(self, entries: tuple[tuple[bytes, Principal], ...] = ()) -> None:
        self._entries = entries

    @property
    def open(self) -> bool:
        """No tokens are configured: every request acts as admin."""
        return not self._entries

    @staticmethod
    def resolve(tokens: tuple[Token, ...], environ: Mapping[str, str] | None = None
                ) -> tuple[tuple[bytes, Principal], ...]:
        """Each token's digest and principal; raises ConfigError naming an unset variable."""
        env = os.environ if environ is None else environ
        entries: list[tuple[bytes, Principal]] = []
        issues: list[ConfigIssue] = []
        for index, token in enumerate(tokens):
            if token.sha256 is not None:
                hashed = token.sha256
            else:
                secret = env.get(token.env or "", "")
                if not secret:
                    issues.append(ConfigIssue(
                        f"api.tokens[{index}].env", token.env,
                        f"the environment variable is not set or empty; export it with the "
                        f"token of {token.name!r}, or give sha256 = the token's sha256 hex"))
                    continue
                hashed = digest(secret)
            entries.append((bytes.fromhex(hashed), Principal(token.name, token.account)))
        if issues:
            raise ConfigError("api tokens", issues)
        return tuple(entries)

    def replace(self, entries: tuple[tuple[bytes, Principal], ...]) -> None:
        """Swap in tokens already checked by :meth:`resolve` (one assignment: atomic)."""
        self._entries = entries

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of ``presented``, or None when it matches no configured token."""
        if self.open:
            return OPEN
        hashed = hashlib.sha256(presented.encode("utf-8")).digest()
        found: Principal | None = None
        for expected, principal in self._entries:
            # Compare against every entry so the time taken says nothing about which matched.
            if hmac.compare_digest(hashed, expected) and found is None:
                found = principal
        return found


# the door ------------------------------------------------------------------------------
PRINCIPAL_KEY = "callgate.principal"


class RequireToken:
    """ASGI middleware: every ``/v1/`` request needs a known bearer token (unless open).

    It answers 401 itself, before the body is read or validated, so an unauthenticated
    client learns nothing; an authenticated request carries its :class:`Principal` in
    the ASGI scope (:func:`principal_of`). A middleware rather than a FastAPI dependency
    because resolving a dependency costs more than the gate's own decision. On the paths
    in ``query_token_paths`` (the event stream, which a browser's ``EventSource`` opens
    without headers) the token may come as ``?token=`` instead.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, prefix: str = "/v1/",
                 query_token_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.authenticator = authenticator
        self.prefix = prefix
        self.query_token_paths = query_token_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self.authenticator.open:
            scope[PRINCIPAL_KEY] = OPEN
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"),
                      b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if not header and scope["path"] in self.query_token_paths:
            scheme, token = "bearer", _query_token(scope)
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = self.authenticator.authenticate(token.strip())
            refusal = ("unknown bearer token (revoked, mistyped, or from another deployment)",
                       "invalid_token", ', error="invalid_token"')
        else:
            refusal = ("this API needs a bearer token: send 'Authorization: Bearer <token>'",
                       "unauthenticated", "")
        if principal is None:
            detail, error, extra = refusal
            response = JSONResponse({"detail": detail, "error": error}, status_code=401,
                                    headers={"WWW-Authenticate": f'Bearer realm="callgate"{extra}'})
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def _query_token(scope: Scope) -> str:
    """The ``token`` query parameter of the request, or "" without one."""
    query = scope.get("query_string", b"").decode("latin-1")
    return next((value for name, value in parse_qsl(query) if name == "token"), "")


def principal_of(request: Request) -> Principal:
    """The principal :class:`RequireToken` found for this request."""
    principal: Principal = request.scope[PRINCIPAL_KEY]
    return principal


# what an account token sees ----------------------------------------------------------
def visible_usage(document: dict[str, Any], stack: Stack, account: str) -> dict[str, Any]:
    """The usage document cut to ``account``'s own scopes: its numbers and its plan.

    Trunks, provider pools and resources are shared with other accounts, so their
    occupancy (and key cooldowns) would tell one tenant about another's traffic; they
    are left out. ``leases`` becomes the account's own count (each lease holds exactly
    one slot of its account).
    """
    numbers = {n for n, spec in stack.numbers.items() if spec.account == account}
    layers = [row for row in document["layers"]
              if (row["layer"] == "number" and row["scope"] in numbers)
              or (row["layer"] == "account" and row["scope"] == account)]
    windows = [w for w in document["windows"]
               if str(w["scope"]).rsplit(":", 2)[0] in numbers | {account}]
    own = next((row["in_use"] for row in layers if row["layer"] == "account"), 0)
    return {**document, "leases": own, "layers": layers, "windows": windows, "cooldowns": []}


def visible_queue(entries: list[dict[str, Any]], account: str) -> list[dict[str, Any]]:
    """The queue entries of ``account``'s calls only."""
    return [entry for entry in entries if entry["account"] == account]
