"""The durable store: SQLAlchemy Core tables, the engine factory, Alembic migrations.

- ``node.store.tables``: the schema (``metadata`` and one ``Table`` per table).
- ``node.store.db``: ``create_engine``, ``migrate``/``migrate_async``, ``check_migrated``.
- ``node.store.outbox_repo``: queue/claim/mark functions for the outbox.
"""

from node.store.db import (
    NotMigrated,
    check_migrated,
    create_engine,
    current_revision,
    head_revision,
    migrate,
    migrate_async,
)
from node.store.tables import metadata

__all__ = [
    "NotMigrated",
    "check_migrated",
    "create_engine",
    "current_revision",
    "head_revision",
    "metadata",
    "migrate",
    "migrate_async",
]
