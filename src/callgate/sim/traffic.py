"""The traffic model that the simulator and the load tester share.

Picture the switchboard of a group of clinics: callers ring at random moments (a Poisson
process, steady or following the hour of the day), some of them are the clinic calling
out, each conversation lasts a while (exponential, lognormal or fixed around a mean),
a caller put on hold hangs up once their patience runs out, some agent workers crash
mid-call and never say goodbye, and now and then a provider key answers 429 for a while.

Everything is in *simulated* seconds from the start of the run (hour 0 = midnight when
an hourly profile drives the rate). One ``random.Random(seed)`` draws every number, in
a fixed order per call, so a seed replays the same traffic; nothing else draws from it
(the simulator gives the gate a stream of its own), so it is the same on any stack.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from callgate.config import Stack
from callgate.model import Direction
from callgate.planning.traffic_profile import HOURS, HourlyProfile

HandleDist = Literal["exp", "lognormal", "fixed"]
HANDLE_DISTS: tuple[HandleDist, ...] = ("exp", "lognormal", "fixed")
HOUR_S = 3600.0
DAY_S = HOURS * HOUR_S


@dataclass(frozen=True)
class KeyFault:
    """``provider:key`` answers 429 from ``start_s`` for ``duration_s`` simulated seconds.

    Each 429 says ``Retry-After: retry_after_s``; the worker that got it reports it to the
    gate, which cools the key down; a key that comes back while the fault lasts gets
    another 429 at once.
    """

    provider: str
    key: str
    start_s: float
    duration_s: float
    retry_after_s: float = 30.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def scope(self) -> str:
        return f"{self.provider}:{self.key}"


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call as the traffic model drew it (times in simulated seconds)."""

    seq: int
    arrival_s: float
    direction: Direction
    number: str
    handle_s: float
    patience_s: float  # math.inf: waits forever
    dies_after_s: float | None  # the worker crashes this long after admission (no release)


@dataclass(frozen=True)
class Traffic:
    """Arrivals, mix, handle times, patience, numbers and faults (simulated seconds).

    The arrival rate is ``rate_per_s`` (constant) or each hour's calls of ``profile``
    (repeating daily), times ``factor``. ``lognormal_sigma`` is the shape of the
    lognormal handle time (its mean stays ``aht_s``). ``die_fraction`` of the calls
    crash at a uniform moment of their conversation and stop renewing.
    """

    numbers: tuple[str, ...]
    aht_s: float
    rate_per_s: float | None = None
    profile: HourlyProfile | None = None
    factor: float = 1.0
    handle_dist: HandleDist = "exp"
    lognormal_sigma: float = 1.0
    patience_s: float = math.inf
    outbound_fraction: float = 0.0
    die_fraction: float = 0.0
    faults: tuple[KeyFault, ...] = ()

    def __post_init__(self) -> None:
        if (self.rate_per_s is None) == (self.profile is None):
            raise ValueError("give exactly one of rate_per_s (calls/s) or profile")
        if self.rate_per_s is not None and not (0 < self.rate_per_s < math.inf):
            raise ValueError(f"rate_per_s must be a finite number > 0, got {self.rate_per_s}")
        checks: list[tuple[str, float, bool]] = [
            ("aht_s", self.aht_s, 0 < self.aht_s < math.inf),
            ("factor", self.factor, 0 < self.factor < math.inf),
            ("lognormal_sigma", self.lognormal_sigma, 0 < self.lognormal_sigma < 10),
            ("patience_s", self.patience_s, self.patience_s > 0),
            ("outbound_fraction", self.outbound_fraction, 0 <= self.outbound_fraction <= 1),
            ("die_fraction", self.die_fraction, 0 <= self.die_fraction <= 1),
        ]
        for name, value, ok in checks:
            if not ok:
                raise ValueError(f"{name} = {value!r} is out of range")
        if not self.numbers:
            raise ValueError("numbers must name at least one number of the stack")

    # the arrival process -----------------------------------------------------------
    def rate_at(self, t_s: float) -> float:
        """Arrivals per simulated second at ``t_s``."""
        if self.profile is None:
            assert self.rate_per_s is not None
            return self.rate_per_s * self.factor
        hour = int(t_s // HOUR_S) % HOURS
        return self.profile.calls[hour] / HOUR_S * self.factor

    def next_arrival(self, t_s: float, rng: random.Random) -> float:
        """The first arrival after ``t_s`` (an exact draw of the piecewise-constant process)."""
        need = rng.expovariate(1.0)  # unit-rate exponential, spent through the hours
        if self.profile is None:
            return t_s + need / self.rate_at(t_s)
        for _ in range(HOURS * 10_000):  # bounded: every day has calls (profile checked)
            hour_end = (math.floor(t_s / HOUR_S) + 1) * HOUR_S
            rate = self.rate_at(t_s)
            mass = rate * (hour_end - t_s)
            if rate > 0 and need <= mass:
                return t_s + need / rate
            need -= mass
            t_s = hour_end
        raise AssertionError("unreachable: a profile with calls always yields an arrival")

    def expected_calls(self, start_s: float, end_s: float) -> float:
        """Mean number of arrivals in ``[start_s, end_s)``."""
        if self.profile is None:
            return self.rate_at(0.0) * (end_s - start_s)
        total, t = 0.0, start_s
        while t < end_s:
            step_end = min(end_s, (math.floor(t / HOUR_S) + 1) * HOUR_S)
            total += self.rate_at(t) * (step_end - t)
            t = step_end
        return total

    # one call ------------------------------------------------------------------------
    def handle_time(self, rng: random.Random) -> float:
        if self.handle_dist == "exp":
            return rng.expovariate(1.0 / self.aht_s)
        if self.handle_dist == "lognormal":
            sigma = self.lognormal_sigma
            return rng.lognormvariate(math.log(self.aht_s) - sigma * sigma / 2, sigma)
        return self.aht_s

    def draw(self, seq: int, arrival_s: float, rng: random.Random) -> PlannedCall:
        """The call arriving at ``arrival_s``; always the same five draws, in this order."""
        outbound = rng.random() < self.outbound_fraction
        number = self.numbers[int(rng.random() * len(self.numbers))]
        handle = self.handle_time(rng)
        patience = (rng.expovariate(1.0 / self.patience_s) if math.isfinite(self.patience_s)
                    else math.inf)
        dies = rng.random() < self.die_fraction
        return PlannedCall(seq, arrival_s, "outbound" if outbound else "inbound", number,
                           handle, patience, handle * rng.random() if dies else None)

    def describe(self) -> dict[str, Any]:
        """The model's parameters as a JSON-ready dict."""
        return {
            "rate_per_s": self.rate_per_s,
            "profile": None if self.profile is None else (self.profile.description or "hourly"),
            "factor": self.factor,
            "aht_s": self.aht_s,
            "handle_dist": self.handle_dist,
            "patience_s": self.patience_s if math.isfinite(self.patience_s) else None,
            "outbound_fraction": self.outbound_fraction,
            "die_fraction": self.die_fraction,
            "numbers": len(self.numbers),
            "faults": [{"scope": f.scope, "start_s": f.start_s, "duration_s": f.duration_s,
                        "retry_after_s": f.retry_after_s} for f in self.faults],
        }


def numbers_for(stack: Stack, numbers: Sequence[str] = (), accounts: Sequence[str] = ()
                ) -> tuple[str, ...]:
    """The numbers calls hit: ``numbers`` if given, else the stack's (of ``accounts``).

    Raises ``ValueError`` naming a number or account the stack does not have.
    """
    unknown_accounts = sorted(set(accounts) - set(stack.accounts))
    if unknown_accounts:
        raise ValueError(f"account(s) {unknown_accounts} are not in the stack; "
                         f"defined: {sorted(stack.accounts)}")
    if numbers:
        unknown = [n for n in numbers if n not in stack.numbers]
        if unknown:
            raise ValueError(f"number(s) {unknown} are not in the stack; "
                             f"defined: {sorted(stack.numbers)}")
        chosen = tuple(dict.fromkeys(numbers))
    else:
        chosen = tuple(stack.numbers)
    if accounts:
        chosen = tuple(n for n in chosen if stack.numbers[n].account in accounts)
        if not chosen:
            raise ValueError(f"no number of account(s) {sorted(accounts)} is in the list")
    return chosen
