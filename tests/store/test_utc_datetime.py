"""tables.UTCDateTime: aware UTC in, aware UTC out, on both databases; on SQLite, the
very text SQLAlchemy's DATETIME writes (text order is time order)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, insert, select
from sqlalchemy.dialects import sqlite

from node.store import tables
from node.store.tables import UTCDateTime

_SQLITE = sqlite.dialect()
_OURS = UTCDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
_THEIRS = DateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)

aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                timezone(-timedelta(hours=11))]))


@given(aware)
def test_sqlite_text_is_what_sqlalchemy_s_datetime_writes(value):
    assert _OURS(value) == _THEIRS(value.astimezone(UTC).replace(tzinfo=None))


@given(aware, aware)
def test_sqlite_text_order_is_time_order(a, b):
    assert (_OURS(a) < _OURS(b)) == (a < b)


def test_sqlite_refuses_what_is_not_an_aware_datetime():
    assert _OURS(None) is None
    with pytest.raises(ValueError, match="naive"):
        _OURS(datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="expected a datetime"):
        _OURS(date(2026, 1, 1))


async def test_a_value_is_stored_and_comes_back_the_same_instant_in_utc(migrated_engine):
    sent = datetime(2026, 12, 7, 9, 30, 0, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    closures = tables.partner_closures
    async with migrated_engine.begin() as conn:
        await conn.execute(insert(closures).values(symbol="ISIL:XX-1", learned_at=sent))
        got = (await conn.execute(select(closures.c.learned_at))).scalar_one()
        if migrated_engine.dialect.name == "sqlite":
            stored = (await conn.exec_driver_sql(
                "SELECT learned_at FROM partner_closures")).scalar_one()
            assert stored == "2026-12-07 04:00:00.000005"
    assert got == sent and got.tzinfo is UTC
