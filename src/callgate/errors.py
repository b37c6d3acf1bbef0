"""Errors raised by callgate, and who is at fault for each.

A full layer is never an exception: it is an ordinary :class:`~callgate.model.Decision`.
Exceptions are for misuse and for parts that are broken::

    CallgateError                      base of everything below
    ├── ConfigError                    the stack file (or a flag) is wrong: fix the file
    ├── CallConflictError              the caller reused a call id with a different body
    ├── UnknownNumberError             the caller asked for a number the stack does not have
    ├── UnknownAccountError            a plan names an account the stack does not have
    ├── UnknownProviderError           a key report names a provider or key the stack lacks
    ├── MissingExtraError              an optional part is not installed: pip install it
    └── StoreError                     the store cannot be reached or answered badly;
                                       the gate turns it into one explicit decision
"""

from __future__ import annotations

from dataclasses import dataclass


class CallgateError(Exception):
    """Base class of every callgate error."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a stack file: where, what was found, what is accepted."""

    path: str
    value: object
    message: str

    def __str__(self) -> str:
        try:
            shown = repr(self.value)
        except RecursionError:  # a value nested past repr's depth
            shown = f"<a {type(self.value).__name__} nested too deeply to show>"
        if len(shown) > VALUE_SHOWN_MAX:
            shown = f"{shown[:VALUE_SHOWN_MAX]}... ({len(shown)} characters)"
        return f"{self.path} = {shown}: {self.message}"


VALUE_SHOWN_MAX = 200  # a longer value is shown cut short


class ConfigError(CallgateError):
    """The stack (a TOML file, a flag or an environment variable) is invalid.

    The caller is at fault: every issue names the key path, the bad value and what
    would be accepted.
    """

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{source}: invalid stack ({len(issues)} problem(s)):\n{lines}")


class CallConflictError(CallgateError):
    """A call id was reused with a different body: the caller must pick a new id."""


class UnknownNumberError(CallgateError):
    """The number is not in the stack: the caller dialled or chose a number we do not gate."""


class UnknownAccountError(CallgateError):
    """A plan names an account the stack lacks (or one without numbers): pick another."""


class UnknownProviderError(CallgateError):
    """A provider or key alias that the stack does not define."""


class MissingExtraError(CallgateError):
    """An optional dependency is not installed; the message says which extra to install."""


PLAN_EXTRA_HINT = "pip install 'callgate[plan]'"


class StoreError(CallgateError):
    """The store failed (unreachable, locked past its busy timeout, corrupt).

    Retrying may help; the gate never lets it reach a caller but answers with the
    configured ``on_store_error`` decision instead.
    """
