"""Vocabulary shared by the borrower and supplier state machines.

The machines are pure: they take the current state and one input (a
partner's message, a staff action, the clock) and return a :class:`Result`.
The service performs what the result asks for: store the state, queue the
messages, write the history, apply the effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .protocol.messages import BusinessMessage

S = TypeVar("S")


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryEntry:
    """One line of a request's audit trail."""

    event: str
    actor: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Effect:
    """A change outside the transaction row, applied by the service.

    Kinds: ``item_status`` (barcode, status, due_date), ``partner_closure``
    (symbol, start, end, note), ``patron_notice`` (patron_id, text),
    ``charge`` (amount, currency, reason).
    """

    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Result(Generic[S]):
    state: S
    send: tuple[BusinessMessage, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    effects: tuple[Effect, ...] = ()


class StaffActionError(Exception):
    """A staff or patron action that is not allowed now; the text says why."""


class StaffActionInvalid(ValueError):
    """A staff or patron action that is malformed: an unknown action, a missing
    field, a field of the wrong type.  ``problems`` maps each field ("action"
    for the name itself) to what is wrong with it, so every problem is told at once."""

    def __init__(self, action: str | None, problems: dict[str, str]):
        self.action = action
        self.problems = dict(problems)
        listed = "; ".join(f"{name}: {text}" for name, text in self.problems.items())
        super().__init__(f"{action}: {listed}" if action else listed)
