"""The stack: a TOML file validated once, at load, into immutable objects.

A stack names every place a concurrency limit lives (trunks, numbers, account plans,
provider key pools, app resources, rate windows) and the policies for callers over a
cap. Errors name the file, the key path and the bad value, and say what is accepted.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
)

from callgate.durations import parse_duration
from callgate.errors import ConfigError, ConfigIssue
from callgate.model import DEFAULT_OVERFLOW_MESSAGE
from callgate.prompts import hold_message_warnings, hold_music_issues

Duration = Annotated[float, BeforeValidator(parse_duration)]
# Caps, counts, prices and switches take exactly their type: TOML `true` is not a cap of 1,
# nor "2" a cap of 2 (pydantic's lax mode would take both). A float takes an integer.
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(ge=0)]
Money = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Flag = Annotated[bool, Strict()]
Direction = Literal["inbound", "outbound"]
E164 = r"^\+[1-9]\d{1,14}$"
CONFIG_ENV = "CALLGATE_CONFIG"


def sip_uri(value: str) -> str:
    """``value`` if it is a SIP URI (``sip:`` or ``sips:``, something after it, no spaces)."""
    scheme, _, rest = value.partition(":")
    if scheme not in ("sip", "sips") or not rest or any(c.isspace() for c in value):
        raise ValueError('expected a SIP URI such as "sip:agent@10.0.0.5:5060"')
    return value


SipUri = Annotated[str, AfterValidator(sip_uri)]
SipCode = Annotated[int, Field(ge=400, le=699)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Window(_Frozen):
    """At most ``limit`` admissions per ``per`` seconds in one scope (a sliding log)."""

    direction: Literal["inbound", "outbound", "any"] = "any"
    limit: PositiveInt
    per: Duration = Field(gt=0)


class GateSettings(_Frozen):
    lease_ttl: Duration = Field(default=30.0, gt=0)
    max_call_duration: Duration = Field(default=7200.0, gt=0)
    store: str = "sqlite:///callgate.db"
    on_store_error: Literal["reject", "admit_local"] = "reject"
    local_fraction: Annotated[float, Strict()] = Field(default=0.1, gt=0, le=1)
    mode: Literal["enforce", "shadow"] = "enforce"
    poll_timeout: Duration = Field(default=30.0, gt=0)
    tombstone_ttl: Duration = Field(default=60.0, gt=0)
    # 10 minutes: 40x the longest a Twilio-style webhook is retried (all retries within a
    # 15 s total, "Webhooks: Connection Overrides"), and bounded memory at any call rate
    # (README, "Memory": about 0.6 GB at 1,000 calls/s in the memory store). Never by
    # count: evicting by count would let a late retry of an ended id be admitted again.
    ended_ttl: Duration = Field(default=600.0, gt=0)

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "sqlite:///", "redis://", "rediss://",
                                 "redis+cluster://", "rediss+cluster://")):
            raise ValueError('expected "memory://", "sqlite:///path/to/file.db", '
                             '"redis://host:port/db", "rediss://..." or '
                             '"redis+cluster://host:port"')
        return value


class Trunk(_Frozen):
    max_concurrent: PositiveInt
    max_cps: PositiveInt | None = None
    windows: tuple[Window, ...] = ()


class Plan(_Frozen):
    max_concurrent: PositiveInt
    price: Money | None = None


class _Prompted(_Frozen):
    """What callers hear, set per account or number (else [inbound] / [twilio]).

    Resolved number -> account -> stack in one place, :func:`callgate.prompts.prompts_for`.
    """

    hold_message: str | None = None
    overflow_message: str | None = None
    voice: str | None = None
    language: str | None = None
    hold_music_url: str | None = None  # "" here: no music for these calls (a pause instead)
    hold_music_loop: Duration | None = Field(default=None, gt=0)


class Account(_Prompted):
    plan: str
    reserved_inbound: Count = 0
    windows: tuple[Window, ...] = ()
    auth_token_env: str | None = None  # the account's webhook signing token, when it differs
    stream_url: str | None = None  # the agent's media stream for this account's calls
    sip_forward: SipUri | None = None  # the agent's SIP URI for this account's calls


class Number(_Prompted):
    account: str
    trunk: str
    max_concurrent: PositiveInt
    windows: tuple[Window, ...] = ()
    stream_url: str | None = None  # overrides the account's and [twilio]'s
    sip_forward: SipUri | None = None  # overrides the account's and [sip] forward


class Provider(_Frozen):
    keys: tuple[str, ...] = Field(min_length=1)
    sessions_per_key: PositiveInt
    max_sessions: PositiveInt | None = None
    cooldown: Duration = Field(default=30.0, gt=0)
    required: Flag = True
    windows: tuple[Window, ...] = ()

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if any(not key or ":" in key for key in keys):
            raise ValueError("key aliases must be non-empty and must not contain ':'")
        if len(set(keys)) != len(keys):
            raise ValueError("key aliases must be unique within a provider")
        return keys


class Resource(_Frozen):
    capacity: PositiveInt
    per_call: PositiveInt = 1


class Inbound(_Frozen):
    queue_max: Count = 20
    max_wait: Duration = Field(default=120.0, ge=0)
    hold_message: str = "All our agents are busy. Please hold; your call matters to us."
    overflow_message: str = DEFAULT_OVERFLOW_MESSAGE
    retry_after: Duration = Field(default=300.0, ge=0)
    handle_time: Duration = Field(default=180.0, gt=0)


class Outbound(_Frozen):
    # An outbound lease is taken before dialling and must outlive the ring time: its first
    # expiry is dial_ttl (then lease_ttl from the first renew, or the webhook's on answer).
    dial_ttl: Duration = Field(default=90.0, gt=0)
    retry_base: Duration = Field(default=30.0, gt=0)
    retry_max: Duration = Field(default=900.0, gt=0)
    jitter: Literal["full", "none"] = "full"
    max_attempts: PositiveInt = 5


class Costs(_Frozen):
    """Monthly price of one more unit of each layer, for the planner's cheapest fix."""

    number: Money | None = None
    trunk_channel: Money | None = None
    provider_session: dict[str, Money] = {}
    resource_unit: dict[str, Money] = {}


class Token(_Frozen):
    """A bearer token: its secret lives in an environment variable (``env``) or as a hash.

    An account token sees and changes only its own account's calls; an admin token sees
    everything and may reload.
    """

    name: str
    account: str | None = None
    admin: Flag = False
    env: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ApiSettings(_Frozen):
    tokens: tuple[Token, ...] = ()


class TwilioSettings(_Frozen):
    """Twilio-style voice webhooks (Twilio, Telnyx TeXML, SignalWire)."""

    auth_token_env: str | None = None
    public_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    stream_url: str | None = None
    hold_music_url: str | None = None
    hold_music_loop: Duration | None = Field(default=None, gt=0)  # the clip's length
    hold_pause: Duration = Field(default=10.0, gt=0)
    voice: str | None = None  # <Say voice=...>, e.g. "Polly.Joanna"
    language: str | None = None  # <Say language=...>, e.g. "en-US"
    say_position: Flag = False
    reject_style: Literal["hangup", "busy", "rejected"] = "hangup"
    webhook_lease_ttl: Duration | None = Field(default=None, gt=0)
    validate_signatures: Flag = True


class SipCodes(_Frozen):
    """The final answer the SIP edge gives a refused INVITE, by what refused it."""

    number: SipCode = 486
    account: SipCode = 486
    resource: SipCode = 486
    provider: SipCode = 486
    window: SipCode = 486
    queue_full: SipCode = 486
    queue_timeout: SipCode = 486
    provider_cooldown: SipCode = 480
    # RFC 3261 21.5.4: a 503 tells an upstream proxy this whole server is unavailable.
    trunk: SipCode = 503
    store_unavailable: SipCode = 503


class SipSettings(_Frozen):
    """``callgate sip``: where it listens and where admitted INVITEs go (flags win)."""

    listen: str | None = None
    forward: SipUri | None = None
    forward_timeout: Duration = Field(default=32.0, gt=0)
    session_expires: Duration = 1800.0  # RFC 4028 session timers on both legs
    codes: SipCodes = SipCodes()

    @field_validator("session_expires")
    @classmethod
    def _rfc_4028_floor(cls, value: float) -> float:
        if value < 90:
            raise ValueError(f"{value:g} s is below RFC 4028's minimum of 90 s; use 90s or more "
                             '(the default is "30m")')
        return value


class Stack(_Frozen):
    """The whole configuration, validated and immutable."""

    gate: GateSettings = GateSettings()
    trunks: dict[str, Trunk] = Field(min_length=1)
    plans: dict[str, Plan] = Field(min_length=1)
    accounts: dict[str, Account] = Field(min_length=1)
    numbers: dict[Annotated[str, Field(pattern=E164)], Number] = Field(min_length=1)
    providers: dict[str, Provider] = {}
    resources: dict[str, Resource] = {}
    inbound: Inbound = Inbound()
    outbound: Outbound = Outbound()
    costs: Costs = Costs()
    api: ApiSettings = ApiSettings()
    twilio: TwilioSettings = TwilioSettings()
    sip: SipSettings = SipSettings()

    def webhook_lease_ttl(self) -> float:
        """TTL of a webhook-admitted lease: ``webhook_lease_ttl``, else the max call length."""
        return self.twilio.webhook_lease_ttl or self.gate.max_call_duration

    def required_providers(self) -> tuple[str, ...]:
        """Names of the provider pools every call needs unless it says otherwise."""
        return tuple(name for name, pool in self.providers.items() if pool.required)


COMMON_RING_TIMEOUT_S = 60.0
"""The ring timeout most providers default to (Twilio's ``timeout``): 60 s."""


def stack_warnings(stack: Stack) -> list[ConfigIssue]:
    """What is valid but likely to drop real calls (``check`` prints it, ``serve`` logs it)."""
    warnings = []
    if stack.outbound.dial_ttl < COMMON_RING_TIMEOUT_S:
        warnings.append(ConfigIssue(
            "outbound.dial_ttl", f"{stack.outbound.dial_ttl:g}s",
            f"below the common ring timeout ({COMMON_RING_TIMEOUT_S:g}s): an outbound call "
            f"answered after {stack.outbound.dial_ttl:g}s finds its lease expired and is hung "
            "up; raise dial_ttl or dial with a shorter ring timeout"))
    return warnings + hold_message_warnings(stack)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        text = item if item.replace("_", "").replace("-", "").isalnum() else f'"{item}"'
        parts.append(("." if parts else "") + text)
    return "".join(parts) or "(top level)"


def _issues_from(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in error.errors():
        # pydantic appends the validator's name to some locations (e.g. a dict key check).
        loc = tuple(p for p in err["loc"] if p not in ("[key]", "function-after[_unique_keys()]"))
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the stack reference in the README)"
        elif err["type"] == "missing":
            value, message = None, "required key is missing"
        elif err["type"] == "string_pattern_mismatch":
            message = _PATTERN_MESSAGES.get(str(loc[0]) if loc else "", message)
        issues.append(ConfigIssue(_format_loc(loc), value, message))
    return issues


_PATTERN_MESSAGES = {
    "numbers": "numbers must be E.164: '+' then up to 15 digits, e.g. \"+14155550100\"",
    "api": "expected the token's SHA-256 as 64 lowercase hex characters "
           "(printf %s \"$TOKEN\" | sha256sum)",
}


def _cross_check(stack: Stack) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for name, account in stack.accounts.items():
        if account.plan not in stack.plans:
            issues.append(ConfigIssue(f"accounts.{name}.plan", account.plan,
                                      f"no such plan; defined plans: {sorted(stack.plans)}"))
        elif account.reserved_inbound >= stack.plans[account.plan].max_concurrent:
            issues.append(ConfigIssue(
                f"accounts.{name}.reserved_inbound", account.reserved_inbound,
                f"must be below the plan's max_concurrent "
                f"({stack.plans[account.plan].max_concurrent}) or outbound could never run"))
    for kind, names, known in (("provider_session", stack.costs.provider_session, stack.providers),
                               ("resource_unit", stack.costs.resource_unit, stack.resources)):
        for name in names:
            if name not in known:
                what = kind.split("_")[0]
                issues.append(ConfigIssue(f"costs.{kind}.{name}", name,
                                          f"no such {what}; defined: {sorted(known)}"))
    issues += _window_clashes(stack)
    issues += hold_music_issues(stack)
    for name, resource in stack.resources.items():
        if resource.per_call > resource.capacity:
            issues.append(ConfigIssue(
                f"resources.{name}.per_call", resource.per_call,
                f"must be at most the capacity ({resource.capacity}), or no call could ever "
                "be admitted"))
    for index, token in enumerate(stack.api.tokens):
        where = f"api.tokens[{index}]"
        if (token.env is None) == (token.sha256 is None):
            issues.append(ConfigIssue(where, token.name, "give exactly one of env (the name of "
                                      "an environment variable holding the token) or sha256"))
        if token.admin == (token.account is not None):
            issues.append(ConfigIssue(where, token.name, "a token is either admin = true or "
                                      "scoped to one account (account = NAME), not both"))
        if token.account is not None and token.account not in stack.accounts:
            issues.append(ConfigIssue(f"{where}.account", token.account,
                                      f"no such account; defined: {sorted(stack.accounts)}"))
    for number, spec in stack.numbers.items():
        if spec.account not in stack.accounts:
            issues.append(ConfigIssue(f'numbers."{number}".account', spec.account,
                                      f"no such account; defined: {sorted(stack.accounts)}"))
        if spec.trunk not in stack.trunks:
            issues.append(ConfigIssue(f'numbers."{number}".trunk', spec.trunk,
                                      f"no such trunk; defined: {sorted(stack.trunks)}"))
    return issues


def _window_clashes(stack: Stack) -> list[ConfigIssue]:
    """Two windows of one scope with the same direction and period would share one log."""
    scopes: list[tuple[str, tuple[Window, ...]]] = []
    for name, trunk in stack.trunks.items():
        cps = (Window(limit=trunk.max_cps, per=1.0),) if trunk.max_cps is not None else ()
        scopes.append((f"trunks.{name}", trunk.windows + cps))
    scopes += [(f'numbers."{n}"', spec.windows) for n, spec in stack.numbers.items()]
    scopes += [(f"accounts.{n}", spec.windows) for n, spec in stack.accounts.items()]
    scopes += [(f"providers.{n}", spec.windows) for n, spec in stack.providers.items()]
    issues = []
    for where, windows in scopes:
        seen: set[tuple[str, float]] = set()
        for window in windows:
            ident = (window.direction, window.per)
            if ident in seen:
                issues.append(ConfigIssue(
                    f"{where}.windows", [w.model_dump() for w in windows],
                    f"two windows for direction {window.direction!r} per {window.per:g} s "
                    "(max_cps counts as an 'any' window per 1 s): keep one, with the lower "
                    "limit"))
            seen.add(ident)
    return issues


def _apply_number_defaults(raw: dict[str, Any]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """``raw`` with ``[number_defaults]`` merged into every number, and its own problems.

    The defaults are checked on their own first, so a typo is reported once, under
    ``number_defaults``, and not once per number; a bad default is left out of the merge.
    """
    defaults = raw.pop("number_defaults", None)
    if defaults is None:
        return raw, []
    if not isinstance(defaults, Mapping):
        return raw, [ConfigIssue("number_defaults", defaults, "expected a table")]
    issues = _defaults_issues(defaults)
    bad = {issue.path.removeprefix("number_defaults.").split(".")[0].split("[")[0]
           for issue in issues}
    kept = {key: value for key, value in defaults.items() if key not in bad}
    numbers = raw.get("numbers")
    if isinstance(numbers, Mapping):
        raw["numbers"] = {
            key: {**kept, **value} if isinstance(value, Mapping) else value
            for key, value in numbers.items()
        }
    return raw, issues


def _defaults_issues(defaults: Mapping[str, Any]) -> list[ConfigIssue]:
    """What is wrong with ``[number_defaults]`` itself, named under ``number_defaults``."""
    # The required keys get harmless stand-ins, so only what the defaults say is judged.
    stand_ins = {"account": "-", "trunk": "-", "max_concurrent": 1}
    try:
        Number.model_validate({**stand_ins, **defaults})
    except ValidationError as exc:
        return [ConfigIssue(f"number_defaults.{issue.path}", issue.value, issue.message)
                for issue in _issues_from(exc)]
    return []


def parse_stack(raw: Mapping[str, Any], source: str = "stack") -> Stack:
    """Validate a decoded stack document; raises :class:`ConfigError` listing every problem."""
    data, issues = _apply_number_defaults(dict(raw))
    try:
        stack = Stack.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, issues + _issues_from(exc)) from None
    issues += _cross_check(stack)
    if issues:
        raise ConfigError(source, issues)
    return stack


def load_stack(path: str | Path, *, store: str | None = None) -> Stack:
    """Read and validate a stack file; ``store`` (a flag or env value) beats the file's."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        issue = ConfigIssue("(file)", str(file), exc.strerror or str(exc))
        raise ConfigError(str(file), [issue]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        byte = exc.object[exc.start]
        issue = ConfigIssue("(file)", str(file), f"not UTF-8 text (byte 0x{byte:02x} on line "
                                                 f"{line}); save the file as UTF-8")
        raise ConfigError(str(file), [issue]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), [ConfigIssue("(syntax)", str(file), str(exc))]) from None
    except RecursionError:
        raise ConfigError(str(file), [ConfigIssue(
            "(syntax)", str(file), "arrays or tables nested too deeply to read; a stack "
                                   "needs a few levels at most")]) from None
    if store is not None:
        raw.setdefault("gate", {})
        if isinstance(raw["gate"], dict):
            raw["gate"]["store"] = store
    return parse_stack(raw, source=str(file))


def config_path(flag: str | None) -> str | None:
    """The stack path: the flag beats ``CALLGATE_CONFIG``."""
    return flag or os.environ.get(CONFIG_ENV)
