"""What a Redis store URL says, and what callgate needs of the server it names.

:func:`parse_url` splits callgate's own query parameters (timeout, prefix, sharing) from
redis-py's; :func:`check_sharing` refuses per-account hash tags for a stack whose
accounts share a trunk, a provider pool or a resource; :func:`check_version` refuses a
server older than :data:`MIN_VERSION`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from callgate.config import Stack
from callgate.errors import ConfigError, ConfigIssue, StoreError

SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
Sharing = Literal["stack", "account"]


# the URL ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisOptions:
    """What a store URL says: where Redis is, and callgate's own query parameters."""

    url: str  # for redis-py, without callgate's parameters
    cluster: bool
    timeout_s: float = 0.5
    prefix: str = "callgate"
    sharing: Sharing = "stack"


def parse_url(url: str) -> RedisOptions:
    """``redis://[:password@]host:port/db``, ``rediss://``, ``redis+cluster://host:port``.

    callgate's query parameters: ``timeout`` (socket timeout in seconds, default 0.5),
    ``prefix`` (the hash tag's name, default ``callgate``), ``sharing`` (``stack`` or
    ``account``); any other parameter goes to redis-py.
    """
    if not url.startswith(SCHEMES):
        raise ValueError(f"not a Redis store URL: {url!r}; accepted: " + ", ".join(SCHEMES))
    parts = urlsplit(url)
    cluster = parts.scheme.endswith("+cluster")
    scheme = parts.scheme.removesuffix("+cluster")
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (own.__setitem__(name, value) if name in ("timeout", "prefix", "sharing")
         else rest.append((name, value)))
    timeout = own.get("timeout", "0.5")
    try:
        timeout_s = float(timeout)
    except ValueError:
        timeout_s = math.nan
    if not (0 < timeout_s < 3600):
        raise ValueError(f"store URL timeout={timeout!r}: expected seconds > 0, e.g. 0.5")
    prefix = own.get("prefix", "callgate")
    if not prefix or any(ch in prefix for ch in "{}"):
        raise ValueError(f"store URL prefix={prefix!r}: expected a non-empty name without "
                         "braces, e.g. callgate")
    sharing = own.get("sharing", "stack")
    if sharing not in ("stack", "account"):
        raise ValueError(f"store URL sharing={sharing!r}: expected 'stack' (one hash tag for "
                         "the whole stack) or 'account' (one per account)")
    plain = urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return RedisOptions(plain, cluster, timeout_s, prefix, cast(Sharing, sharing))


def wants_account_sharing(url: str) -> bool:
    return url.startswith(SCHEMES) and parse_url(url).sharing == "account"


def sharing_issues(stack: Stack) -> list[ConfigIssue]:
    """Why ``stack`` cannot tag per account: trunks, pools or resources used by two accounts."""
    if len(stack.accounts) < 2:
        return []
    issues = []
    owners: dict[str, set[str]] = {}
    for spec in stack.numbers.values():
        owners.setdefault(spec.trunk, set()).add(spec.account)
    for trunk, accounts in sorted(owners.items()):
        if len(accounts) > 1:
            issues.append(ConfigIssue(
                f"trunks.{trunk}", sorted(accounts),
                "sharing=account needs each trunk used by one account only; use the "
                "default sharing=stack, or give each account its own trunk"))
    for kind, names in (("providers", stack.providers), ("resources", stack.resources)):
        for name in names:
            issues.append(ConfigIssue(
                f"{kind}.{name}", sorted(stack.accounts),
                f"sharing=account needs accounts that share no provider pool or resource; "
                f"{kind}.{name} serves every account: use the default sharing=stack"))
    return issues


def check_sharing(stack: Stack) -> None:
    """Raise :class:`ConfigError` if the stack's store asks for per-account tags it cannot use.

    ``callgate serve`` (or any code that builds a gate on a Redis store with
    ``?sharing=account``) should call this once after loading the stack; the store checks
    what it can see of the stack (pools, resources) itself.
    """
    if wants_account_sharing(stack.gate.store):
        issues = sharing_issues(stack)
        if issues:
            raise ConfigError(f"gate.store = {stack.gate.store!r}", issues)


MIN_VERSION = (6, 2)


def check_version(versions: Sequence[str], where: str) -> None:
    """Refuse servers older than :data:`MIN_VERSION` (``versions``: each node's
    ``redis_version``), naming the version found and the one needed."""
    for text in versions:
        try:
            found = tuple(int(part) for part in text.split(".")[:2])
        except ValueError:
            continue  # not a version Redis reports: let the scripts say what is missing
        if found < MIN_VERSION:
            raise StoreError(
                f"the Redis store at {where} runs Redis {text}; callgate needs Redis "
                f"{'.'.join(map(str, MIN_VERSION))} or later (its scripts use SET ... GET "
                "and ZMSCORE)")
