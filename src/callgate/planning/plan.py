"""The capacity plan: how many concurrent calls to provision, and which cap bites first.

The procedure, in the order a planner walks it:

1. **Little's Law**: average concurrency = arrival rate x average handle time. Ten calls
   a minute lasting three minutes each keep 30 calls up on average.
2. **The peak**: the busy hour (the profile's fullest hour, or 10% of a day's calls when
   only a daily volume is known), the rule-of-thumb ceiling (average x peak factor), and
   the Erlang requirement at the busy hour for the stated targets (Erlang B lines for a
   blocking target, Erlang C agents for a service level, Erlang A with caller patience).
   The requirement is the largest of these.
3. **The call's path**: every layer a call needs a slot in (its number or numbers, trunk,
   account plan, each required provider pool, each resource, and every rate window as the
   concurrency it can sustain), and the lowest cap among them: the bottleneck.
4. **Rates**: peak arrivals per second against every ``max_cps`` and window on the path.
5. **Headroom** (bottleneck cap - requirement; negative is a shortfall).
6. **The cheapest fix** from ``[costs]``: each layer below the requirement must be raised,
   each in its cheapest way; the total is their sum.
7. **Outbound campaigns**: caller numbers needed under the per-number windows.

Every cap and requirement is a number of concurrent calls; times are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from callgate.config import Stack
from callgate.durations import format_duration
from callgate.errors import UnknownAccountError
from callgate.planning.capacity import LayerCapacity
from callgate.planning.erlang import (
    QueueStats,
    agents_for_service_level,
    erlang_b,
    erlang_c,
    lines_for_blocking,
)
from callgate.planning.erlang_a import (
    AbandonStats,
    agents_for_abandon,
    agents_for_service_level_abandon,
    erlang_a,
)
from callgate.planning.fix import Fix, cheapest_fix, money
from callgate.planning.path import CallPath, Direction, applies, call_path
from callgate.planning.traffic_profile import HOURS, HourlyProfile

BUSY_HOUR_RATIO = 0.1
"""Share of a day's calls assumed to fall in the busy hour when no profile is given."""

# The shape of a business day (relative calls per hour, hour 0 first), used to draw a day
# volume by hour when no profile is given; mixed with a flat day so that the busy hour
# carries exactly BUSY_HOUR_RATIO of the calls.
_DAY_SHAPE = (12, 8, 6, 5, 6, 10, 25, 70, 210, 340, 400, 380,
              290, 320, 360, 330, 270, 170, 90, 55, 40, 30, 22, 16)  # fmt: skip
_EPS = 1e-9


def seconds_text(value: float | None) -> str:
    """An answer time or a patience as written: ``0s``, ``endless``, or the duration."""
    if value is None:
        return "-"
    if value == 0:
        return "0s"
    return "endless" if value == math.inf else format_duration(value)


def _slots(concurrency: float) -> int:
    """Whole slots for a concurrency, forgiving float noise (18.000000001 needs 18)."""
    return math.ceil(concurrency - _EPS)


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Volume:
    """Call volume: exactly one of calls per day, calls in the busy hour, or a profile."""

    calls_per_day: float | None = None
    calls_per_hour: float | None = None
    profile: HourlyProfile | None = None

    def __post_init__(self) -> None:
        given = (self.calls_per_day, self.calls_per_hour, self.profile)
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of calls_per_day, calls_per_hour or profile")
        for name in ("calls_per_day", "calls_per_hour"):
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise ValueError(f"{name} must be a finite number of calls > 0, got {value}")

    @property
    def kind(self) -> Literal["per_day", "per_hour", "profile"]:
        """Which of the three was given."""
        if self.profile is not None:
            return "profile"
        return "per_day" if self.calls_per_day is not None else "per_hour"

    @property
    def hourly(self) -> tuple[float, ...]:
        """Calls in each hour 0..23: the profile, a day-shaped curve, or a flat day."""
        if self.profile is not None:
            return self.profile.calls
        if self.calls_per_hour is not None:
            return (self.calls_per_hour,) * HOURS
        day = float(self.calls_per_day or 0.0)
        total = math.fsum(_DAY_SHAPE)
        share = max(_DAY_SHAPE) / total
        mix = (BUSY_HOUR_RATIO - 1 / HOURS) / (share - 1 / HOURS)
        return tuple(day * (mix * w / total + (1 - mix) / HOURS) for w in _DAY_SHAPE)

    @property
    def average_calls_per_hour(self) -> float:
        """The day's average hourly rate (the given hour's rate for ``calls_per_hour``)."""
        if self.calls_per_hour is not None:
            return self.calls_per_hour
        if self.profile is not None:
            return self.profile.total / HOURS
        return float(self.calls_per_day or 0.0) / HOURS

    @property
    def busy_hour(self) -> int | None:
        """The busy hour of a profile (0..23); None when it is not known."""
        return self.profile.busy_hour if self.profile is not None else None

    @property
    def busy_hour_calls(self) -> float:
        """Calls in the busy hour."""
        if self.profile is not None:
            return self.profile.busy_hour_calls
        if self.calls_per_hour is not None:
            return self.calls_per_hour
        return float(self.calls_per_day or 0.0) * BUSY_HOUR_RATIO

    @property
    def busy_hour_ratio(self) -> float | None:
        """The busy hour's share of the day (None for a single hour's volume)."""
        if self.profile is not None:
            return self.profile.busy_hour_ratio
        return BUSY_HOUR_RATIO if self.calls_per_day is not None else None


@dataclass(frozen=True)
class Targets:
    """Grades of service to size for; None leaves a target out.

    ``blocking``: fraction of callers who may find every line busy (Erlang B).
    ``service_level`` within ``answer_within_s``: fraction answered that fast (Erlang C,
    and Erlang A when ``patience_s``, the callers' mean patience, is given).
    ``max_abandon``: fraction of callers who may hang up on hold (Erlang A).
    ``answer_within_s = 0`` asks for callers answered without waiting; ``patience_s = 0``
    (callers hang up at once: Erlang B) and ``math.inf`` (never: Erlang C) are legal.
    """

    blocking: float | None = 0.01
    service_level: float | None = 0.8
    answer_within_s: float = 20.0
    patience_s: float | None = 60.0
    max_abandon: float | None = 0.05

    def __post_init__(self) -> None:
        for name in ("blocking", "service_level", "max_abandon"):
            value = getattr(self, name)
            if value is not None and not (0 < value < 1):
                raise ValueError(f"{name} must be a fraction strictly between 0 and 1, got {value}")
        if not (0 <= self.answer_within_s < math.inf):
            raise ValueError("answer_within_s must be a finite number of seconds >= 0, "
                             f"got {self.answer_within_s}")
        if self.patience_s is not None and not self.patience_s >= 0:
            raise ValueError("patience_s must be a number of seconds >= 0 (math.inf: never "
                             f"hangs up), got {self.patience_s}")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Demand:
    """Little's Law and the peak (concurrency in calls, rates in calls per hour or second)."""

    calls_per_day: float | None
    """The day's calls (None when only one hour's volume is known)."""
    average_calls_per_hour: float
    average_concurrency: float
    """Little's Law on the average rate: calls/h / 3600 x AHT."""
    busy_hour: int | None
    busy_hour_calls: float
    busy_hour_ratio: float | None
    busy_hour_concurrency: float
    """Little's Law on the busy hour: its traffic in erlangs."""
    peak_factor: float
    rule_of_thumb: float
    """average_concurrency x peak_factor."""
    peak_arrivals_per_s: float
    """busy_hour_calls x peak_factor / 3600."""
    hourly_calls: tuple[float, ...]


@dataclass(frozen=True)
class ErlangNeeds:
    """Slots the busy hour needs for each target (None: target not set or not applicable)."""

    traffic: float
    lines_for_blocking: int | None
    agents_for_service_level: int | None
    agents_for_service_level_abandon: int | None
    agents_for_abandon: int | None


@dataclass(frozen=True)
class Grade:
    """The busy hour's grade of service if the bottleneck cap were all there is.

    Each queueing model answers under its own name: ``blocking`` is Erlang B's (no
    queue), ``erlang_c`` callers who wait forever, ``erlang_a`` callers who hang up after
    ``patience_s`` (None: outbound, or no patience given).
    """

    slots: int
    blocking: float
    erlang_c: QueueStats | None
    erlang_a: AbandonStats | None
    patience_s: float | None = None

    @property
    def p_wait(self) -> float | None:
        """Erlang C's probability of waiting."""
        return None if self.erlang_c is None else self.erlang_c.p_wait

    @property
    def service_level(self) -> float | None:
        """Erlang C's service level."""
        return None if self.erlang_c is None else self.erlang_c.service_level

    @property
    def asa_s(self) -> float | None:
        """Erlang C's average speed of answer; ``math.inf`` when the queue grows forever."""
        return None if self.erlang_c is None else self.erlang_c.asa_s

    @property
    def p_abandon(self) -> float | None:
        """Erlang A's share of callers hanging up."""
        return None if self.erlang_a is None else self.erlang_a.p_abandon


@dataclass(frozen=True)
class RateCheck:
    """Peak arrivals per second against one rate window (``max_cps`` is a 1 s window)."""

    scope: str
    limit: int
    period_s: float
    limit_per_s: float
    peak_per_s: float

    @property
    def ok(self) -> bool:
        """True when the peak arrival rate fits under the window's rate."""
        return self.peak_per_s <= self.limit_per_s


@dataclass(frozen=True)
class NumbersCheck:
    """Caller numbers one per-number limit asks for, for a campaign rate."""

    limit: str
    per_number_calls_per_hour: float
    numbers_needed: int


@dataclass(frozen=True)
class CarrierCheck:
    """One layer besides the numbers against the campaign's concurrency."""

    layer: str
    scope: str
    cap: int
    note: str
    needed: int

    @property
    def ok(self) -> bool:
        """True when the layer carries the campaign's concurrency."""
        return self.cap >= self.needed


@dataclass(frozen=True)
class Campaign:
    """Caller numbers an outbound campaign needs under the per-number limits, and whether
    the account's plan, the trunks, the provider pools, resources and other windows carry
    its concurrency (Little's Law: calls/h / 3600 x AHT)."""

    target_calls_per_hour: float
    checks: tuple[NumbersCheck, ...]
    numbers_needed: int
    numbers_current: int
    extra_numbers: int
    extra_monthly_cost: float | None
    concurrency: float = 0.0
    carriers: tuple[CarrierCheck, ...] = ()

    @property
    def blocked_by(self) -> tuple[CarrierCheck, ...]:
        """The layers that cannot carry the campaign's concurrency."""
        return tuple(check for check in self.carriers if not check.ok)


@dataclass(frozen=True)
class AccountCap:
    """One account's own lowest cap (its numbers, plan, trunks, pools and resources)."""

    account: str
    numbers: int
    lowest: LayerCapacity


@dataclass(frozen=True)
class PlanResult:
    """What :func:`plan` found; see ``callgate.planning.report`` for the JSON shape."""

    direction: Direction
    number: str | None
    account: str | None
    aht_s: float
    volume_kind: str
    volume_description: str
    targets: Targets
    demand: Demand
    erlang: ErlangNeeds
    requirement: int
    requirement_basis: str
    explanation: str
    path: tuple[LayerCapacity, ...]
    bottleneck: LayerCapacity
    grade: Grade
    rates: tuple[RateCheck, ...]
    fix: Fix
    campaign: Campaign | None
    warnings: tuple[str, ...] = field(default=())
    accounts: tuple[AccountCap, ...] = field(default=())
    """Whole-stack plans: each account's own lowest cap (empty for a number or account)."""

    @property
    def rule_of_thumb_slots(self) -> int:
        """The rule-of-thumb ceiling rounded up to whole slots."""
        return _slots(self.demand.rule_of_thumb)

    @property
    def headroom(self) -> int:
        """Bottleneck cap - requirement (negative: a shortfall)."""
        return self.bottleneck.cap - self.requirement

    @property
    def shortfall(self) -> int:
        """Concurrent calls missing at the bottleneck (0 when there is headroom)."""
        return max(0, -self.headroom)

    def loadtest_command(self, config: str) -> str:
        """The ``callgate loadtest`` line for a test at 1.5x the requirement."""
        return (f"callgate loadtest --url http://127.0.0.1:8080 --config {config} "
                f"--peak {self.requirement} --aht {format_duration(self.aht_s)} "
                f"--factor 1.5 --duration 120 --speed 10")


# ------------------------------------------------------------------------ the demand side


def _demand(volume: Volume, aht_s: float, peak_factor: float) -> Demand:
    average = volume.average_calls_per_hour
    busy = volume.busy_hour_calls
    day = volume.profile.total if volume.profile is not None else volume.calls_per_day
    return Demand(
        calls_per_day=day,
        average_calls_per_hour=average,
        average_concurrency=average / 3600 * aht_s,
        busy_hour=volume.busy_hour,
        busy_hour_calls=busy,
        busy_hour_ratio=volume.busy_hour_ratio,
        busy_hour_concurrency=busy / 3600 * aht_s,
        peak_factor=peak_factor,
        rule_of_thumb=average / 3600 * aht_s * peak_factor,
        peak_arrivals_per_s=busy * peak_factor / 3600,
        hourly_calls=volume.hourly,
    )


def _erlang(traffic: float, aht_s: float, targets: Targets, direction: Direction) -> ErlangNeeds:
    queue = direction == "inbound"  # outbound never holds a caller: Erlang C/A do not apply
    blocking = service = with_abandon = abandon = None
    if targets.blocking is not None:
        blocking = lines_for_blocking(traffic, targets.blocking)
    if queue and targets.service_level is not None:
        service = agents_for_service_level(traffic, aht_s, targets.answer_within_s,
                                           targets.service_level)
        if targets.patience_s is not None:
            with_abandon = agents_for_service_level_abandon(
                traffic, aht_s, targets.patience_s, targets.answer_within_s,
                targets.service_level)
    if queue and targets.patience_s is not None and targets.max_abandon is not None:
        abandon = agents_for_abandon(traffic, aht_s, targets.patience_s, targets.max_abandon)
    return ErlangNeeds(traffic, blocking, service, with_abandon, abandon)


def _requirement(demand: Demand, needs: ErlangNeeds) -> tuple[int, str]:
    candidates = [
        ("erlang_b", needs.lines_for_blocking),
        ("erlang_c", needs.agents_for_service_level),
        ("erlang_a_service_level", needs.agents_for_service_level_abandon),
        ("erlang_a_abandon", needs.agents_for_abandon),
        ("rule_of_thumb", _slots(demand.rule_of_thumb)),
    ]
    known = [(name, value) for name, value in candidates if value is not None]
    top = max(value for _, value in known)
    return top, next(name for name, value in known if value == top)


def _explanation(demand: Demand, targets: Targets, direction: Direction) -> str:
    grades = []
    if targets.blocking is not None:
        grades.append(f"{targets.blocking:.0%} blocked")
    if direction == "inbound" and targets.service_level is not None:
        grades.append(f"{targets.service_level:.0%} answered within "
                      f"{seconds_text(targets.answer_within_s)}")
    if (direction == "inbound" and targets.patience_s is not None
            and targets.max_abandon is not None):
        grades.append(f"at most {targets.max_abandon:.0%} hanging up")
    average = "hourly" if demand.busy_hour_ratio is None else "daily"
    return (f"The {demand.peak_factor:g}x rule covers minute-to-minute swings around the "
            f"{average} average; Erlang sizes the busy hour for a stated grade of service "
            f"({', '.join(grades) or 'none given'}). The requirement is the largest of these.")


def _grade(traffic: float, slots: int, aht_s: float, targets: Targets,
           direction: Direction) -> Grade:
    blocking = erlang_b(traffic, slots)
    if direction == "outbound":
        return Grade(slots, blocking, None, None)
    queue = erlang_c(traffic, slots, aht_s, targets.answer_within_s)
    abandon = None
    if targets.patience_s is not None:
        abandon = erlang_a(traffic, slots, aht_s, targets.patience_s, targets.answer_within_s)
    return Grade(slots, blocking, queue, abandon, targets.patience_s)


# ------------------------------------------------------------------------------ campaign


def _campaign(stack: Stack, path: CallPath, target: float, aht_s: float) -> Campaign:
    """Caller numbers for ``target`` calls/h (the tightest per-number limit decides), and
    every other layer of the path against the campaign's concurrency."""
    numbers = path.numbers
    specs = [stack.numbers[n] for n in numbers]
    checks: list[NumbersCheck] = []
    periods = sorted({w.per for s in specs for w in s.windows if applies(w, "outbound")})
    for period in periods:
        limit = min(w.limit for s in specs for w in s.windows
                    if w.per == period and applies(w, "outbound"))
        per_hour = limit * 3600 / period
        checks.append(NumbersCheck(f"{limit} per {format_duration(period)} window", per_hour,
                                   math.ceil(target / per_hour - _EPS)))
    cap = min(s.max_concurrent for s in specs)
    per_hour = cap * 3600 / aht_s
    checks.append(NumbersCheck(f"{cap} concurrent at AHT {format_duration(aht_s)}", per_hour,
                               math.ceil(target / per_hour - _EPS)))
    needed = max(check.numbers_needed for check in checks)
    extra = max(0, needed - len(specs))
    price = stack.costs.number
    concurrency = target / 3600 * aht_s
    carriers = []
    for row in path.rows:
        group = path.window(row.scope) if row.layer == "window" else None
        if row.layer == "number" or (group is not None and group.owner == "number"):
            continue  # the caller numbers above are counted for these
        carriers.append(CarrierCheck(row.layer, row.scope, row.cap, row.note,
                                     _slots(concurrency)))
    return Campaign(target, tuple(checks), needed, len(specs), extra,
                    money(None if price is None else extra * price), concurrency,
                    tuple(carriers))


def _account_caps(stack: Stack, direction: Direction, aht_s: float) -> tuple[AccountCap, ...]:
    """Each account's own lowest cap: a full account hides in the whole stack's sums."""
    found = []
    for name in stack.accounts:
        try:
            own = call_path(stack, direction, None, aht_s, account=name)
        except UnknownAccountError:
            continue  # an account without numbers takes no calls
        found.append(AccountCap(name, len(own.numbers), min(own.rows, key=lambda r: r.cap)))
    return tuple(found)


# ------------------------------------------------------------------------------- warnings


def _warnings(stack: Stack, direction: Direction, rates: Iterable[RateCheck]) -> list[str]:
    warnings = []
    inbound = stack.inbound
    if direction == "inbound" and (inbound.queue_max == 0 or inbound.max_wait == 0):
        key = "queue_max = 0" if inbound.queue_max == 0 else "max_wait = 0"
        warnings.append(f"no inbound queue ([inbound] {key}): a caller who finds a layer full "
                        f"is turned away at once; set queue_max and max_wait to hold callers")
    if direction == "outbound" and stack.outbound.max_attempts == 1:
        warnings.append("no outbound retry ([outbound] max_attempts = 1): a call refused by a "
                        "full layer is dropped, never retried; raise max_attempts")
    for rate in rates:
        if not rate.ok:
            warnings.append(f"peak arrivals {rate.peak_per_s:.3g}/s exceed the window "
                            f"{rate.scope} ({rate.limit_per_s:.3g}/s): calls over it are "
                            f"{'queued' if direction == 'inbound' else 'retried later'}")
    return warnings


# ---------------------------------------------------------------------------- the procedure


def plan(
    stack: Stack,
    volume: Volume,
    aht_s: float,
    peak_factor: float = 2.5,
    targets: Targets | None = None,
    direction: Direction = "inbound",
    number: str | None = None,
    campaign_calls_per_hour: float | None = None,
    account: str | None = None,
) -> PlanResult:
    """Plan capacity for ``volume`` calls of mean length ``aht_s`` seconds on ``stack``.

    ``number`` plans one number's traffic along its path (inbound) or its account's caller
    pool (outbound); ``account`` plans one account's traffic on its own numbers, plan,
    trunks, pools and resources; neither plans the whole stack, every layer summed, and
    lists each account's own lowest cap beside it. ``targets`` defaults to ``Targets()``.
    ``campaign_calls_per_hour`` (outbound) also counts the caller numbers a campaign of
    that rate needs and checks every other layer against its concurrency. Raises
    ``ValueError`` for a bad argument, :class:`~callgate.errors.UnknownNumberError` for a
    number and :class:`~callgate.errors.UnknownAccountError` for an account the stack
    lacks.
    """
    if not (0 < aht_s < math.inf):
        raise ValueError(f"aht_s must be a finite number of seconds > 0, got {aht_s}")
    if not (1 <= peak_factor < math.inf):
        raise ValueError(f"peak_factor must be a finite number >= 1, got {peak_factor}")
    if direction not in ("inbound", "outbound"):
        raise ValueError(f"direction must be 'inbound' or 'outbound', got {direction!r}")
    if campaign_calls_per_hour is not None and not (0 < campaign_calls_per_hour < math.inf):
        raise ValueError("campaign_calls_per_hour must be a finite number of calls > 0, "
                         f"got {campaign_calls_per_hour}")
    if number is not None and account is not None:
        raise ValueError("give number or account, not both")
    targets = targets or Targets()
    path = call_path(stack, direction, number, aht_s, account)
    demand = _demand(volume, aht_s, peak_factor)
    needs = _erlang(demand.busy_hour_concurrency, aht_s, targets, direction)
    requirement, basis = _requirement(demand, needs)
    neck = min(path.rows, key=lambda row: row.cap)
    rates = tuple(RateCheck(g.scope, g.limit, g.period_s, g.per_s, demand.peak_arrivals_per_s)
                  for g in path.windows)
    campaign = None
    if campaign_calls_per_hour is not None and direction == "outbound":
        campaign = _campaign(stack, path, campaign_calls_per_hour, aht_s)
    whole = number is None and account is None
    return PlanResult(
        direction=direction,
        number=number,
        account=account,
        aht_s=aht_s,
        volume_kind=volume.kind,
        volume_description=volume.profile.description if volume.profile else "",
        targets=targets,
        demand=demand,
        erlang=needs,
        requirement=requirement,
        requirement_basis=basis,
        explanation=_explanation(demand, targets, direction),
        path=path.rows,
        bottleneck=neck,
        grade=_grade(demand.busy_hour_concurrency, neck.cap, aht_s, targets, direction),
        rates=rates,
        fix=cheapest_fix(stack, path, requirement, aht_s, direction),
        campaign=campaign,
        warnings=tuple(_warnings(stack, direction, rates)),
        accounts=_account_caps(stack, direction, aht_s) if whole else (),
    )
