"""Everything that must hold before a gate serves, checked by one function for two commands.

``callgate serve`` refuses to start on an error and logs each warning once; ``callgate
check`` runs the very same checks and prints each finding once (``--strict`` turns
warnings into errors)::

    preflight(stack, host, insecure_webhooks) -> Findings
      errors    the API open off loopback (no [[api.tokens]] and a public --host)
                a SQLite store in a directory that does not exist
                Redis ?sharing=account with accounts that share a trunk, pool or resource
                a token whose environment variable is unset
                webhooks that could not work ([twilio]: no stream URL, no auth token, ...)
      warnings  an open API (no tokens: every local process may take and free slots)
                webhooks whose signatures are not checked
                what is valid but drops real calls (config.stack_warnings: a dial_ttl
                below the common ring timeout, a hold message too long to say)

:func:`check_edges` (tokens and webhooks) is also what the app runs when it is built and
on every reload.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from callgate.config import Stack, stack_warnings
from callgate.errors import ConfigError, ConfigIssue
from callgate.service.auth import Authenticator, Principal
from callgate.stores.redis_options import check_sharing

Tokens = tuple[tuple[bytes, Principal], ...]


@dataclass(frozen=True)
class Findings:
    errors: tuple[ConfigIssue, ...]
    warnings: tuple[ConfigIssue, ...]


def preflight(stack: Stack, *, host: str = "127.0.0.1",
              insecure_webhooks: bool = False) -> Findings:
    """Every problem `serve` would refuse to start with, and every warning it would log."""
    errors: list[ConfigIssue] = []
    if not stack.api.tokens and not is_loopback(host):
        errors.append(ConfigIssue(
            "--host", host, "the stack has no [[api.tokens]], so anyone who can reach the port "
            "could take and free every slot: add tokens (see the README, 'Tokens') or bind a "
            "loopback address (--host 127.0.0.1)"))
    errors += _store_issues(stack)
    errors += _sharing_issues(stack)
    errors += edge_issues(stack, insecure_webhooks)
    return Findings(_once(errors), _once(bind_warnings(stack, host) + stack_warnings(stack)
                                         + app_warnings(stack, insecure_webhooks)))


def bind_warnings(stack: Stack, host: str) -> list[ConfigIssue]:
    """What `serve` warns about the address it serves on."""
    if stack.api.tokens:
        return []
    return [ConfigIssue("api.tokens", [], f"no tokens: the API on {host} is open to every "
                                          "local process")]


def app_warnings(stack: Stack, insecure_webhooks: bool) -> list[ConfigIssue]:
    """What the app warns about when it is built (logged once, by the app)."""
    if not webhooks_enabled(stack):
        return []
    if insecure_webhooks:
        where, value = "--insecure-webhooks", True
    elif not stack.twilio.validate_signatures:
        where, value = "twilio.validate_signatures", False
    else:
        return []
    return [ConfigIssue(where, value, "Twilio webhook signatures are NOT validated: anyone who "
                                      "can reach /twilio/* can take and free slots; for local "
                                      "testing only")]


def webhooks_enabled(stack: Stack) -> bool:
    return "twilio" in stack.model_fields_set


def edge_issues(stack: Stack, insecure: bool, *, webhooks: bool | None = None
                ) -> list[ConfigIssue]:
    """Token and webhook problems (empty when the edges can be built)."""
    try:
        check_edges(stack, None, insecure, webhooks=webhooks)
    except ConfigError as exc:
        return list(exc.issues)
    return []


def check_edges(stack: Stack, source: str | None, insecure: bool, *,
                webhooks: bool | None = None) -> Tokens:
    """The resolved tokens; raises ConfigError listing every token and webhook problem once."""
    issues: list[ConfigIssue] = []
    tokens: Tokens = ()
    try:
        tokens = Authenticator.resolve(stack.api.tokens)
    except ConfigError as exc:
        issues += exc.issues
    if webhooks_enabled(stack) if webhooks is None else webhooks:
        try:
            from callgate.service.twilio import check_stack
        except ImportError as exc:
            issues.append(ConfigIssue("twilio", "(table)", str(exc)))
        else:
            issues += check_stack(stack, insecure=insecure)
    if issues:
        raise ConfigError(source or "stack", list(_once(issues)))
    return tokens


def _store_issues(stack: Stack) -> list[ConfigIssue]:
    """What can be known of the store without opening it (opening writes the limits)."""
    url = stack.gate.store
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///").partition("?")[0] or ".").parent
        if not folder.is_dir():
            return [ConfigIssue("gate.store", url, f"cannot open the store: the directory "
                                                   f"{str(folder)!r} does not exist")]
    return []


def _sharing_issues(stack: Stack) -> list[ConfigIssue]:
    try:
        check_sharing(stack)  # acts only on a Redis URL asking for sharing=account
    except ConfigError as exc:
        return list(exc.issues)
    return []


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (only processes on this machine can connect)?"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _once(issues: list[ConfigIssue]) -> tuple[ConfigIssue, ...]:
    """``issues`` without repeats (two accounts sharing one unset variable: one problem)."""
    seen: set[str] = set()
    kept = []
    for issue in issues:
        if str(issue) not in seen:
            seen.add(str(issue))
            kept.append(issue)
    return tuple(kept)
