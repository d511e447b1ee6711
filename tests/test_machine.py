"""node.machine's shared helpers: the JSON form of the machines' states, and evolve."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from node.machine import evolve, to_json_value


class Colour(enum.StrEnum):
    RED = "Red"


class Size(enum.IntEnum):
    BIG = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    at: datetime
    day: date | None = None


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    colour: Colour
    size: Size
    amount: Decimal
    inners: tuple[Inner, ...] = ()
    extra: dict = None  # type: ignore[assignment]
    flag: bool = False


def test_every_kind_of_value_becomes_json_data():
    at = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)
    value = Outer(name="x", colour=Colour.RED, size=Size.BIG, amount=Decimal("1.50"),
                  inners=(Inner(at=at, day=date(2026, 12, 7)), Inner(at=at)),
                  extra={1: [Colour.RED, (2, None)], "k": {"d": date(2026, 1, 2)}}, flag=True)
    data = to_json_value(value)
    assert data == {
        "name": "x", "colour": "Red", "size": 3, "amount": "1.50",
        "inners": [{"at": "2026-12-06T21:00:00+00:00", "day": "2026-12-07"},
                   {"at": "2026-12-06T21:00:00+00:00", "day": None}],
        "extra": {"1": ["Red", [2, None]], "k": {"d": "2026-01-02"}}, "flag": True,
    }
    # plain JSON types only: enums are their values, not the enum members
    assert type(data["colour"]) is str and type(data["size"]) is int
    assert json.loads(json.dumps(data)) == data


def test_evolve_changes_the_named_fields_and_keeps_the_rest():
    at = datetime(2026, 12, 6, tzinfo=UTC)
    before = Inner(at=at)
    after = evolve(before, day=date(2026, 12, 8))
    assert after == Inner(at=at, day=date(2026, 12, 8))
    assert before.day is None  # a new value; the old one is untouched
    with pytest.raises(TypeError):
        evolve(before, colour=Colour.RED)  # no such field: refused, as dataclasses.replace does


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    low: int
    high: int

    def __post_init__(self):
        if self.low > self.high:
            raise ValueError("low above high")


def test_evolve_copies_slotted_and_plain_dataclasses_alike():
    """Inner (slotted, set slot by slot) and Outer (no slots, rebuilt through __init__)."""
    at = datetime(2026, 12, 6, tzinfo=UTC)
    inner = Inner(at=at, day=date(2026, 12, 7))
    assert evolve(inner) == inner and evolve(inner) is not inner
    assert evolve(inner, at=at.replace(hour=3), day=None) == Inner(at=at.replace(hour=3))
    outer = Outer(name="x", colour=Colour.RED, size=Size.BIG, amount=Decimal(1))
    assert evolve(outer, flag=True) == Outer(name="x", colour=Colour.RED, size=Size.BIG,
                                             amount=Decimal(1), flag=True)
    with pytest.raises(AttributeError):  # still frozen
        evolve(inner, day=None).day = date(2026, 1, 1)  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field 'colour'"):
        evolve(inner, colour=Colour.RED)
    with pytest.raises(TypeError):
        evolve(outer, colour2=Colour.RED)


def test_evolve_keeps_a_post_init_check():
    """A class whose __init__ does more than store its arguments is built through it."""
    with pytest.raises(ValueError, match="low above high"):
        evolve(Checked(low=1, high=2), low=3)
