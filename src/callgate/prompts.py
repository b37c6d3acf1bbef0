"""What a caller hears: the words, the voice and the hold music, resolved per dialled number.

A platform hosts many brands on one gate; a clinic's callers must hear the clinic's words in
the clinic's voice. Each prompt may be set on a number, on its account, or for the whole
stack, and the most specific one wins::

    numbers."+14155550100".hold_message -> accounts.acme.hold_message -> [inbound] hold_message
    numbers."+14155550100".voice        -> accounts.acme.voice        -> [twilio] voice

(the same for ``overflow_message``, ``language`` and the hold music). The gate's decisions
(``message``) and every TwiML answer read them through :func:`prompts_for`, so the API and
the phone never disagree.

Hold music is a pair: ``hold_music_url``, a clip made to loop, and ``hold_music_loop``, its
length. After the hold message, each of a held caller's cycles plays the clip once and then
re-polls the gate, so the clip's end *is* the poll: it must be known, and short enough that
a cycle (the clip plus a position line said before it) stays well inside ``[gate]
poll_timeout``; the stack refuses a loop longer than ``poll_timeout / 2`` at load. The pair
is taken from the most specific level that sets ``hold_music_url``; ``hold_music_url = ""``
there means no music (a pause).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from callgate.errors import ConfigIssue

if TYPE_CHECKING:  # config imports this module to validate the stack
    from callgate.config import Account, Number, Stack, TwilioSettings


@dataclass(frozen=True)
class Prompts:
    """Everything said or played to a caller of one number (durations in seconds)."""

    hold_message: str
    overflow_message: str
    voice: str | None = None
    language: str | None = None
    hold_music_url: str | None = None
    hold_music_loop_s: float | None = None  # set whenever hold_music_url is


def prompts_for(stack: Stack, number: str) -> Prompts:
    """The prompts of calls to (or from) ``number``: the number's, its account's, the stack's.

    A number the stack does not have gets the stack's own prompts.
    """
    spec = stack.numbers.get(number)
    account = stack.accounts.get(spec.account) if spec is not None else None
    levels = tuple(level for level in (spec, account) if level is not None)

    def pick(name: str, default: str | None) -> str | None:
        for level in levels:
            value: str | None = getattr(level, name)
            if value is not None:
                return value
        return default

    music: Account | Number | TwilioSettings = next(
        (level for level in levels if level.hold_music_url is not None), stack.twilio)
    url = music.hold_music_url or None
    inbound = stack.inbound
    return Prompts(
        hold_message=pick("hold_message", inbound.hold_message) or "",
        overflow_message=pick("overflow_message", inbound.overflow_message) or "",
        voice=pick("voice", stack.twilio.voice),
        language=pick("language", stack.twilio.language),
        hold_music_url=url,
        hold_music_loop_s=music.hold_music_loop if url else None,
    )


def hold_music_issues(stack: Stack) -> list[ConfigIssue]:
    """Hold music the webhooks could not loop safely, for the stack's validation at load."""
    longest = stack.gate.poll_timeout / 2
    levels: list[tuple[str, Account | Number | TwilioSettings]] = [("twilio", stack.twilio)]
    levels += [(f"accounts.{name}", spec) for name, spec in stack.accounts.items()]
    levels += [(f'numbers."{number}"', spec) for number, spec in stack.numbers.items()]
    issues = []
    for where, level in levels:
        url, loop = level.hold_music_url, level.hold_music_loop
        if loop is not None and not url:
            issues.append(ConfigIssue(
                f"{where}.hold_music_loop", loop, "hold_music_loop is the length of the "
                "hold_music_url clip, and there is none here: set hold_music_url beside it or "
                "remove hold_music_loop"))
        elif url and loop is None:
            issues.append(ConfigIssue(
                f"{where}.hold_music_loop", None, f"required with hold_music_url ({url!r}): "
                "the clip's length (e.g. \"12s\"), at most gate.poll_timeout / 2 "
                f"({longest:g} s); each hold cycle plays the clip once and then re-polls, so "
                "its end must come before the poll is due"))
        elif loop is not None and loop > longest:
            issues.append(ConfigIssue(
                f"{where}.hold_music_loop", loop, f"at most gate.poll_timeout / 2 "
                f"({longest:g} s): each hold cycle plays the clip once before it re-polls, and a "
                "longer cycle can drop the caller from the queue; cut a shorter loop or raise "
                "poll_timeout"))
    return issues


WORDS_PER_SECOND = 2.5
"""How fast text-to-speech voices talk, roughly (150 words a minute), to size a message."""


def hold_message_warnings(stack: Stack) -> list[ConfigIssue]:
    """Hold messages that may take longer to say than ``poll_timeout / 2``, for ``check``.

    The first hold cycle re-polls only once the message is said; a message that outlasts
    ``poll_timeout`` drops the caller from the queue. Speech length is an estimate, hence a
    warning rather than a refusal.
    """
    longest = stack.gate.poll_timeout / 2
    messages: list[tuple[str, str | None]] = [("inbound.hold_message",
                                               stack.inbound.hold_message)]
    messages += [(f"accounts.{name}.hold_message", spec.hold_message)
                 for name, spec in stack.accounts.items()]
    messages += [(f'numbers."{number}".hold_message', spec.hold_message)
                 for number, spec in stack.numbers.items()]
    warnings = []
    for where, message in messages:
        seconds = len((message or "").split()) / WORDS_PER_SECOND
        if seconds > longest:
            warnings.append(ConfigIssue(
                where, message,
                f"takes about {seconds:.0f}s to say (at 150 words a minute), more than "
                f"gate.poll_timeout / 2 ({longest:g}s): a held caller is polled again only "
                "once it is said, and is dropped past poll_timeout; shorten it or raise "
                "poll_timeout"))
    return warnings
