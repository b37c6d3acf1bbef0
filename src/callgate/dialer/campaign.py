"""The campaign file (TOML) and its CSVs, validated whole before anyone is dialled.

A campaign names an account of the stack, the caller numbers it may use, a contacts CSV
(``phone`` in E.164, ``timezone`` IANA, ``consent`` true/false, any other column passed
through to the call), an optional do-not-call CSV (a ``phone`` column), calling hours and
days in the callee's time zone, tries and retry delays per result, the ring timeout and
the dry-run placer's outcome table. Every problem, in the TOML or in a CSV, is reported
with the file, line and column (CSV: the row's line and the column's name), all at once;
:func:`load_campaign` returns a :class:`Campaign` only when there is none.

Rows without consent, numbers on the do-not-call list and repeated numbers are valid
rows: they are skipped with a reason and counted, never placed.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from callgate.config import E164, Stack
from callgate.dialer.hours import DAYS, CallingHours, Day, parse_hours
from callgate.durations import parse_duration
from callgate.errors import CallgateError

Duration = Annotated[float, BeforeValidator(parse_duration)]
MIN_RING_TIMEOUT_S = 15.0
ABANDON_REDIAL_S = 72 * 3600.0
_E164 = re.compile(E164)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SkipReason = Literal["no_consent", "dnc", "duplicate"]


# errors -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CampaignIssue:
    """One problem: the file, line and column (1-based), the key or column, what is wrong."""

    file: str
    line: int
    column: int
    where: str
    value: object
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.where} = {self.value!r}: " \
               f"{self.message}"


class CampaignError(CallgateError):
    """The campaign file or one of its CSVs is invalid: fix the file (nothing was dialled)."""

    def __init__(self, issues: list[CampaignIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"invalid campaign ({len(issues)} problem(s)); nothing was dialled:\n"
                         f"{lines}")


# the TOML document --------------------------------------------------------------------
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryDelays(_Frozen):
    """How long after each unanswered result a contact is tried again (if tries remain)."""

    busy: Duration = Field(default=600.0, ge=0)
    no_answer: Duration = Field(default=3600.0, ge=0)
    failed: Duration = Field(default=1800.0, ge=0)
    # An abandoned callee heard silence: never called again within 72 hours.
    abandoned: Duration = ABANDON_REDIAL_S
    machine: Duration = Field(default=4 * 3600.0, ge=0)  # only with voicemail = "hangup"

    @field_validator("abandoned")
    @classmethod
    def _not_within_72h(cls, value: float) -> float:
        if value < ABANDON_REDIAL_S:
            raise ValueError(f"must be at least 72h ({value:g}s given): a callee whose call "
                             "was abandoned is not called again within 72 hours")
        return value


class DryRunTable(_Frozen):
    """Outcomes of the dry-run placer: fractions summing to 1, exponential talk times."""

    answer: float = Field(default=1.0, ge=0, le=1)
    busy: float = Field(default=0.0, ge=0, le=1)
    no_answer: float = Field(default=0.0, ge=0, le=1)
    failed: float = Field(default=0.0, ge=0, le=1)
    talk_time: Duration = Field(default=180.0, ge=0)
    ring_time: Duration = Field(default=5.0, ge=0)
    seed: int = 0
    # fractions of the answered calls: a machine answered, or the agent did not start in time
    machine: float = Field(default=0.0, ge=0, le=1)
    abandon: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> DryRunTable:
        total = self.answer + self.busy + self.no_answer + self.failed
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"answer + busy + no_answer + failed must sum to 1, got {total:g}")
        if self.machine + self.abandon > 1 + 1e-9:
            raise ValueError(f"machine + abandon are fractions of the answered calls and must "
                             f"sum to at most 1, got {self.machine + self.abandon:g}")
        return self


class TwilioPlacement(_Frozen):
    """``--placer twilio``: where the credentials are, where the gate is, what AMD to ask."""

    account_sid_env: str = Field(default="TWILIO_ACCOUNT_SID", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    auth_token_env: str = Field(default="TWILIO_AUTH_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    gate_url: str = Field(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    api_url: str = Field(default="https://api.twilio.com", pattern=r"^https?://[^/?#\s]+/?$")
    machine_detection: Literal["off", "Enable", "DetectMessageEnd"] = "off"


class CampaignFile(_Frozen):
    """The TOML document as written (paths still relative to the file)."""

    name: str = Field(pattern=_NAME, max_length=64)
    account: str
    caller_ids: Literal["all"] | tuple[Annotated[str, Field(pattern=E164)], ...]
    contacts: str
    dnc: str | None = None
    calling_hours: str = "09:00-20:00"
    calling_days: tuple[Day, ...] = DAYS
    max_tries: PositiveInt = 3
    retry: RetryDelays = RetryDelays()
    ring_timeout: Duration = 30.0
    dry_run: DryRunTable = DryRunTable()
    abandon_after: Duration = Field(default=2.0, gt=0)
    abandon_min_answered: PositiveInt = 100
    abandon_limit: float = Field(default=0.03, gt=0, lt=1)
    voicemail: Literal["hangup", "agent"] = "hangup"
    twilio: TwilioPlacement | None = None

    @field_validator("calling_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value

    @field_validator("calling_days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"give at least one day of {list(DAYS)}")
        return value

    @field_validator("ring_timeout")
    @classmethod
    def _ring(cls, value: float) -> float:
        if value < MIN_RING_TIMEOUT_S:
            raise ValueError(f"must be at least {MIN_RING_TIMEOUT_S:g}s (shorter rings hang up "
                             "on people reaching for the phone)")
        return value


# the validated campaign ---------------------------------------------------------------
@dataclass(frozen=True)
class Contact:
    """One row of the contacts CSV (``row`` counts data rows from 1; ``line`` is the file's)."""

    row: int
    line: int
    phone: str
    timezone: str
    consent: bool
    extra: dict[str, str] = field(default_factory=dict)
    skip: SkipReason | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Campaign:
    """A campaign that validated whole, with its contacts read and its rules resolved."""

    path: Path
    spec: CampaignFile
    caller_ids: tuple[str, ...]
    hours: CallingHours
    contacts: tuple[Contact, ...]
    dnc_count: int
    dnc_numbers: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.spec.name

    def digest(self) -> str:
        """What a state file must have been written for: the name and every row's number."""
        body = "\n".join([self.name, *(f"{c.row}:{c.phone}" for c in self.contacts)])
        return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


# locating keys in the TOML text -------------------------------------------------------
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEYLINE = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_-]+)\s*=\s*')
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _locate_keys(text: str) -> dict[tuple[str, ...], tuple[int, int]]:
    """(line, column) of each ``key = value``'s value, by key path (tables and top level).

    tomllib keeps no positions; this reads the lines a campaign file is made of (tables
    and ``key = value``) well enough to point at the key a problem is in.
    """
    found: dict[tuple[str, ...], tuple[int, int]] = {}
    table: tuple[str, ...] = ()
    depth = 0  # inside a multi-line array, lines are values, not keys
    for number, line in enumerate(text.splitlines(), start=1):
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                table = tuple(part.strip().strip('"') for part in header.group(1).split("."))
                found.setdefault(table, (number, line.index("[") + 1))
                continue
            key = _KEYLINE.match(line)
            if key:
                found.setdefault((*table, key.group(1).strip('"')), (number, key.end() + 1))
        code = line.split("#", 1)[0]
        depth = max(0, depth + code.count("[") - code.count("]"))
    return found


def _position(keys: dict[tuple[str, ...], tuple[int, int]], loc: tuple[Any, ...]
              ) -> tuple[int, int]:
    path = tuple(str(part) for part in loc if not isinstance(part, int))
    while path:
        if path in keys:
            return keys[path]
        path = path[:-1]
    return 1, 1


def _dotted(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (("." if i else "") + str(p))
                   for i, p in enumerate(loc)) or "(top level)"


# loading ------------------------------------------------------------------------------
def load_campaign(path: str | Path, stack: Stack) -> Campaign:
    """Read ``path`` and its CSVs against ``stack``; raises :class:`CampaignError` listing
    every problem (file, line, column) when anything is wrong."""
    file = Path(path)
    where = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CampaignError([CampaignIssue(where, 1, 1, "(file)", where, message)]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        pos = _TOML_POS.search(str(exc))
        lines = text.splitlines() or [""]
        line, column = ((int(pos.group(1)), int(pos.group(2))) if pos
                        else (len(lines), len(lines[-1]) + 1))  # "at end of document"
        message = _TOML_POS.sub("", str(exc)).replace("(at end of document)", "").strip()
        message += " (TOML syntax)"
        raise CampaignError([CampaignIssue(where, line, column, "(syntax)", None, message)]
                            ) from None
    keys = _locate_keys(text)
    try:
        spec = CampaignFile.model_validate(raw)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            line, column = _position(keys, loc)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (see the campaign reference in the README)"
            elif err["type"] == "string_pattern_mismatch" and loc[:1] == ("caller_ids",):
                message = 'numbers must be E.164: "+" then up to 15 digits'
            elif loc[:1] == ("caller_ids",):
                message = 'expected "all" or a list of the account\'s numbers (E.164)'
            issues.append(CampaignIssue(where, line, column, _dotted(loc),
                                        err.get("input"), message))
        raise CampaignError(issues) from None
    issues = []

    def issue(loc: tuple[Any, ...], value: object, message: str) -> None:
        line, column = _position(keys, loc)
        issues.append(CampaignIssue(where, line, column, _dotted(loc), value, message))

    caller_ids = _caller_ids(spec, stack, issue)
    if spec.ring_timeout > stack.outbound.dial_ttl:
        issue(("ring_timeout",), raw.get("ring_timeout"),
              f"must be at most the stack's [outbound] dial_ttl "
              f"({stack.outbound.dial_ttl:g}s): a call still ringing then has lost its lease")
    base = file.parent
    dnc: set[str] = set()
    if spec.dnc is not None:
        dnc = _read_dnc(base / spec.dnc, ("dnc",), issue, issues)
    contacts = _read_contacts(base / spec.contacts, ("contacts",), issue, issues, dnc)
    if issues:
        raise CampaignError(issues)
    start, end = parse_hours(spec.calling_hours)
    hours = CallingHours(start, end, frozenset(DAYS.index(d) for d in spec.calling_days))
    return Campaign(file, spec, caller_ids, hours, tuple(contacts), len(dnc), frozenset(dnc))


def append_dnc(campaign: Campaign, phones: list[str]) -> None:
    """Add opted-out ``phones`` to the campaign's ``dnc`` CSV (its columns, phone filled),
    so a later campaign on the same list skips them too; raises ``OSError``."""
    if campaign.spec.dnc is None or not phones:
        return
    path = campaign.path.parent / campaign.spec.dnc
    text = path.read_text(encoding="utf-8-sig")
    header = next(csv.reader(text.splitlines()), ["phone"])
    with path.open("a", encoding="utf-8", newline="") as handle:
        if text and not text.endswith(("\n", "\r")):
            handle.write("\r\n")  # end a last line that has no line break
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        for phone in phones:
            writer.writerow({"phone": phone})


def _caller_ids(spec: CampaignFile, stack: Stack, issue: Any) -> tuple[str, ...]:
    if spec.account not in stack.accounts:
        issue(("account",), spec.account, f"no such account in the stack; defined: "
                                          f"{sorted(stack.accounts)}")
        return ()
    own = tuple(n for n, s in stack.numbers.items() if s.account == spec.account)
    if spec.caller_ids == "all":
        if not own:
            issue(("caller_ids",), "all", f"account {spec.account!r} has no numbers")
        return own
    for number in spec.caller_ids:
        if number not in stack.numbers:
            issue(("caller_ids",), number, "not a number of the stack; add it under [numbers]")
        elif number not in own:
            issue(("caller_ids",), number, f"belongs to account "
                  f"{stack.numbers[number].account!r}, not {spec.account!r}")
    if len(set(spec.caller_ids)) != len(spec.caller_ids):
        issue(("caller_ids",), list(spec.caller_ids), "a number is listed twice")
    if not spec.caller_ids:
        issue(("caller_ids",), [], 'give at least one number, or "all"')
    return tuple(spec.caller_ids)


def _open_csv(path: Path, key: tuple[str, ...], issue: Any
              ) -> tuple[list[str], list[tuple[int, dict[str | None, Any]]]] | None:
    """(header, [(line, row)]) of a CSV, or None after reporting why it cannot be read."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issue(key, str(path), f"cannot read the CSV: {message}")
        return None
    return header, rows


def _check_header(path: Path, header: list[str], needed: tuple[str, ...],
                  issues: list[CampaignIssue]) -> bool:
    missing = [name for name in needed if name not in header]
    if missing:
        issues.append(CampaignIssue(str(path), 1, 1, "(header)", header,
                                    f"missing column(s) {missing}; needed: {list(needed)}"))
    return not missing


def _cell_issue(path: Path, header: list[str], line: int, column: str, value: object,
                message: str) -> CampaignIssue:
    position = header.index(column) + 1 if column in header else 1
    return CampaignIssue(str(path), line, position, column, value, message)


def _shape_issue(path: Path, header: list[str], line: int, row: dict[str | None, Any]
                 ) -> CampaignIssue | None:
    if None in row:
        return CampaignIssue(str(path), line, len(header) + 1, "(row)", row[None],
                             f"more fields than the header's {len(header)} columns")
    short = [name for name in header if row.get(name) is None]
    if short:
        return CampaignIssue(str(path), line, len(header) - len(short) + 1, short[0], None,
                             f"missing field(s) {short}: fewer fields than the header")
    return None


def _read_dnc(path: Path, key: tuple[str, ...], issue: Any, issues: list[CampaignIssue]
              ) -> set[str]:
    table = _open_csv(path, key, issue)
    if table is None or not _check_header(path, table[0], ("phone",), issues):
        return set()
    header, rows = table
    numbers: set[str] = set()
    for line, row in rows:
        bad = _shape_issue(path, header, line, row)
        if bad is not None:
            issues.append(bad)
            continue
        phone = str(row["phone"]).strip()
        if not _E164.match(phone):
            issues.append(_cell_issue(path, header, line, "phone", phone,
                                      'expected E.164: "+" then up to 15 digits'))
        numbers.add(phone)
    return numbers


_CONSENT = {"true": True, "false": False}


def _read_contacts(path: Path, key: tuple[str, ...], issue: Any, issues: list[CampaignIssue],
                   dnc: set[str]) -> list[Contact]:
    table = _open_csv(path, key, issue)
    needed = ("phone", "timezone", "consent")
    if table is None or not _check_header(path, table[0], needed, issues):
        return []
    header, rows = table
    contacts: list[Contact] = []
    seen: dict[str, int] = {}
    zones: dict[str, bool] = {}
    for index, (line, row) in enumerate(rows, start=1):
        bad = _shape_issue(path, header, line, row)
        if bad is not None:
            issues.append(bad)
            continue
        phone, zone = str(row["phone"]).strip(), str(row["timezone"]).strip()
        consent = _CONSENT.get(str(row["consent"]).strip().lower())
        ok = True
        if not _E164.match(phone):
            issues.append(_cell_issue(path, header, line, "phone", phone,
                                      'expected E.164: "+" then up to 15 digits'))
            ok = False
        if zone not in zones:
            zones[zone] = _known_zone(zone)
        if not zones[zone]:
            issues.append(_cell_issue(path, header, line, "timezone", zone,
                                      'expected an IANA time zone, e.g. "America/New_York"'))
            ok = False
        if consent is None:
            issues.append(_cell_issue(path, header, line, "consent", row["consent"],
                                      "expected true or false"))
            ok = False
        if not ok:
            continue
        assert consent is not None
        skip: SkipReason | None = None
        if phone in dnc:
            skip = "dnc"
        elif not consent:
            skip = "no_consent"
        elif phone in seen:
            skip = "duplicate"
        else:
            seen[phone] = index
        extra = {str(k): str(v) for k, v in row.items() if k not in needed and k is not None}
        contacts.append(Contact(index, line, phone, zone, consent, extra, skip))
    if not rows and table is not None:
        issues.append(CampaignIssue(str(path), 1, 1, "(rows)", 0, "the contact list is empty"))
    return contacts


def _known_zone(name: str) -> bool:
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
