"""agency ids stored casefolded, so the inbound duplicate check uses its index (issue 8)

``transactions.requesting_agency_id`` was compared as ``lower(column) = ?``,
which no index serves: every inbound Request scanned all of its role's rows.
The code now stores the id casefolded (``repo.agency_key``) and compares with
``=`` on the unique (role, requesting_agency_id, requesting_request_id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_transactions = sa.table("transactions", sa.column("id"), sa.column("requesting_agency_id"))


def upgrade() -> None:
    # In Python, not SQL lower(): SQLite's folds ASCII only, and the code uses casefold().
    conn = op.get_bind()
    rows = conn.execute(sa.select(_transactions.c.id, _transactions.c.requesting_agency_id))
    changed = [{"tx_id": id_, "agency": agency.casefold()} for id_, agency in rows
               if agency != agency.casefold()]
    update = _transactions.update().where(_transactions.c.id == sa.bindparam("tx_id")).values(
        requesting_agency_id=sa.bindparam("agency"))
    for start in range(0, len(changed), 10_000):
        conn.execute(update, changed[start:start + 10_000])


def downgrade() -> None:
    pass  # casefolded ids are still found by the case-insensitive lookup of 0001's code
