"""The Redis store's two scripts (``lua/apply.lua``, ``lua/renew.lua``): read once from the
package, loaded once as a Redis 7 function library (FUNCTION LOAD / FCALL), else run with
EVALSHA (a cluster client, an older server, an ACL without FUNCTION)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import ResponseError

SCRIPTS = ("apply", "renew")


def _source(name: str) -> str:
    return (resources.files("callgate.stores") / "lua" / f"{name}.lua").read_text("utf-8")


def script_sources() -> dict[str, str]:
    """Each script as EVAL runs it: the function, then a call of it with KEYS and ARGV."""
    return {name: f"{_source(name)}\nreturn {name}(KEYS, ARGV)\n" for name in SCRIPTS}


def library_source() -> tuple[str, str]:
    """(library name, text) of the Redis 7 function library holding every script.

    The name carries a digest of the text, so gates of two callgate versions on one server
    each call their own functions.
    """
    body = "\n".join(_source(name) for name in SCRIPTS)
    digest = hashlib.blake2b(body.encode(), digest_size=6).hexdigest()
    name = f"callgate_{digest}"
    registered = "\n".join(
        f"redis.register_function('{name}_{s}', {s})" for s in SCRIPTS)
    return name, f"#!lua name={name}\n{body}\n{registered}\n"


class Scripts:
    """Runs the scripts: Redis 7 functions (FCALL) where available, else EVALSHA.

    Functions are loaded once per server (FUNCTION LOAD REPLACE) and again when a server
    answers that it has none (a restart without persistence, a failover to an empty
    replica); EVALSHA scripts are reloaded on NOSCRIPT by redis-py. A cluster client uses
    EVALSHA: redis-py routes it by its key, and every key shares one hash tag.
    """

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self._client = client
        self._library, self._text = library_source()
        self._functions = not isinstance(client, RedisCluster)
        self._loaded = False
        self._scripts: dict[str, Script] = {
            name: client.register_script(text) for name, text in script_sources().items()}

    def _load(self) -> None:
        try:
            self._client.function_load(self._text, replace=True)
        except ResponseError as exc:
            text = str(exc).lower()
            if "unknown command" not in text and "noperm" not in text:
                raise
            self._functions = False  # Redis 6 or older, or an ACL without FUNCTION: EVALSHA
        self._loaded = True

    def __call__(self, name: str, keys: list[str], args: Sequence[str | bytes]) -> Any:
        if self._functions and not self._loaded:
            self._load()
        if not self._functions:
            return self._scripts[name](keys=keys, args=args)
        function = f"{self._library}_{name}"
        try:
            return self._client.fcall(function, len(keys), *keys, *args)
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            self._load()
            return self._client.fcall(function, len(keys), *keys, *args)
