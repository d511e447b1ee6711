"""Vocabulary shared by the borrower and supplier state machines.

The machines are pure: they take the current state and one input (a
partner's message, a staff action, the clock) and return a :class:`Result`.
The service performs what the result asks for: store the state, queue the
messages, write the history, apply the effects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime
from operator import attrgetter
from types import MemberDescriptorType
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


# -- states as JSON, and changed copies of them ------------------------------------------
# Both run several times for every message a node stores, so each class's work (its
# field names, how to write it) is looked up once, not on every call.

_PLAIN = frozenset((str, int, float, bool, type(None)))  # exact types: a str Enum is not plain
_WRITERS: dict[type, Callable[[Any], Any]] = {}
_COPIERS: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}


def to_json_value(value: Any) -> Any:
    """``value`` as JSON data: a dataclass as an object of its fields, an enum as its
    value, a date or datetime in ISO 8601, a Decimal as a string, a tuple as a list."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    writer = _WRITERS.get(kind)
    if writer is None:
        writer = _WRITERS[kind] = _writer_for(kind)
    return writer(value)


def _writer_for(kind: type) -> Callable[[Any], Any]:
    if is_dataclass(kind):
        names = tuple(f.name for f in fields(kind))

        def write_dataclass(value: Any) -> dict[str, Any]:
            out = {}
            for name in names:
                item = getattr(value, name)
                out[name] = item if type(item) in _PLAIN else to_json_value(item)
            return out
        return write_dataclass
    if issubclass(kind, enum.Enum):
        return lambda value: value.value
    if issubclass(kind, (datetime, date)):
        return kind.isoformat
    if issubclass(kind, (list, tuple)):
        return lambda value: [item if type(item) in _PLAIN else to_json_value(item)
                              for item in value]
    if issubclass(kind, Mapping):
        return lambda value: {str(key): item if type(item) in _PLAIN else to_json_value(item)
                              for key, item in value.items()}
    return str  # Decimal, and anything else a detail may hold


def evolve(value: S, **changes: Any) -> S:
    """``dataclasses.replace`` without its walk over the field objects on every call."""
    copier = _COPIERS.get(type(value))
    if copier is None:
        copier = _COPIERS[type(value)] = _copier_for(type(value))
    return copier(value, changes)


def _copier_for(kind: type) -> Callable[[Any, dict[str, Any]], Any]:
    """A state class's copy with changes.  For a slotted dataclass whose ``__init__``
    only stores its arguments (the machines' states: 30 fields, copied several times a
    message), its slots are read at once and set directly: 2 to 3 times faster than
    building the keyword arguments and calling the frozen ``__init__``."""
    init = [f for f in fields(kind) if f.init]
    names = tuple(f.name for f in init)
    index = {name: n for n, name in enumerate(names)}
    slots = [kind.__dict__.get(name) for name in names]
    if (len(init) < 2 or len(init) != len(fields(kind)) or hasattr(kind, "__post_init__")
            or not all(isinstance(slot, MemberDescriptorType) for slot in slots)):
        def rebuild(value: Any, changes: dict[str, Any]) -> Any:
            kwargs = {name: getattr(value, name) for name in names}
            kwargs.update(changes)
            return kind(**kwargs)
        return rebuild
    read = attrgetter(*names)
    setters = tuple(slot.__set__ for slot in slots)
    new = object.__new__

    def copy(value: Any, changes: dict[str, Any]) -> Any:
        values = list(read(value))
        for name, changed in changes.items():
            try:
                values[index[name]] = changed
            except KeyError:
                raise TypeError(f"{kind.__name__} has no field {name!r}") from None
        copied = new(kind)
        for set_slot, item in zip(setters, values):
            set_slot(copied, item)
        return copied
    return copy
