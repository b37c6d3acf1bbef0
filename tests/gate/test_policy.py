"""policy.py: what a caller is told, as a pure function of the stack, a verdict and an rng."""

from __future__ import annotations

import ast
import random
from pathlib import Path

from tests.conftest import stack_from
from tests.gate.stacks import BASE, N1

from callgate import policy as policy_module
from callgate.gate import Gate
from callgate.model import Call, Layer, Outcome, Reason
from callgate.policy import Policy
from callgate.stores.base import Blocker, Verdict, VerdictKind


def policy_for(text: str = BASE) -> Policy:
    stack = stack_from(text)
    return Policy(stack, Gate.limits_for(stack))


def test_policy_reads_no_clock_and_touches_no_store() -> None:
    """Only the contract's types: no clock, no time module, no store backend."""
    tree = ast.parse(Path(policy_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert "time" not in imported and "callgate.clock" not in imported
    assert {m for m in imported if m.startswith("callgate.stores")} == {"callgate.stores.base"}


def test_the_same_verdict_and_seed_give_the_same_decision() -> None:
    """Jittered backoff comes from the rng it is given, so a seeded rng replays exactly."""
    policy = policy_for(BASE.replace('jitter = "none"', 'jitter = "full"'))
    verdict = Verdict(VerdictKind.BLOCKED, blockers=(Blocker(f"number:{N1}", Reason.CAPACITY),))
    call = Call("o1", "outbound", N1, attempt=2)
    first = [policy.decide(call, verdict, 0.0, random.Random(5))[0] for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert first[0].outcome is Outcome.RETRY_LATER
    assert first[0].retry_after_s is not None and 0 <= first[0].retry_after_s <= 20


def test_the_store_down_answer_is_explicit_for_both_directions() -> None:
    """Inbound is told the stack's retry_after, outbound its backoff; both name the store."""
    policy = policy_for()
    inbound = policy.store_down(Call("c1", "inbound", N1), random.Random(0))
    outbound = policy.store_down(Call("o1", "outbound", N1, attempt=2), random.Random(0))
    for decision in (inbound, outbound):
        assert (decision.outcome, decision.layer, decision.reason) == (
            Outcome.REJECTED, Layer.STORE, Reason.STORE_UNAVAILABLE)
        assert decision.message
    assert outbound.retry_after_s == 20.0  # retry_base 10 s x 2^(2-1), no jitter in BASE
