"""The database schema: SQLAlchemy Core tables (see docs/ARCHITECTURE.md, "Database").

Portable across SQLite and PostgreSQL:

- ids are BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite;
- timestamps are :class:`UTCDateTime`: aware datetimes in, aware UTC datetimes out
  (SQLite keeps no offset, so everything is converted to UTC before it is stored;
  a naive datetime is refused rather than guessed);
- JSON is JSONB on PostgreSQL, JSON (text) elsewhere;
- constraint and index names follow ``metadata.naming_convention`` so that Alembic
  migrations can refer to them on both databases.

Changing anything here needs a new migration in ``node/store/migrations/versions``;
``tests/store/test_migrations.py`` fails when the two disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always stores and returns UTC.

    Bind: an aware datetime is converted to UTC (naive ones raise ``ValueError``:
    the clock lives at the edges and must hand out aware UTC times).
    Result: SQLite returns naive values (they were stored as UTC), PostgreSQL
    aware ones; both come back as aware datetimes in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite stores text; keep one format so that text order is time order.
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        utc = self.process_bind_param

        def process(value):
            # The text SQLite's DATETIME writes, by C's isoformat rather than its
            # %-formatting of a dict (~1.6 us a value, a dozen values a message stored).
            value = utc(value, dialect)
            return None if value is None else value.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id_type():
    return BigInteger().with_variant(Integer(), "sqlite")


def _json_type():
    return JSON().with_variant(postgresql.JSONB(), "postgresql")


def _pk() -> Column:
    return Column("id", _id_type(), primary_key=True, autoincrement=True)


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name)


ROLES = ("lending", "borrowing")
DIRECTIONS = ("in", "out")
OUTBOX_STATES = ("pending", "sent", "failed")
ITEM_STATUSES = ("available", "on_loan", "missing", "non_circulating")
IDENTIFIER_KINDS = ("isbn", "issn", "oclc", "lccn", "local")
CLOSURE_KINDS = ("lending", "borrowing")

# --------------------------------------------------------------------------- transactions

transactions = Table(
    "transactions",
    metadata,
    _pk(),
    Column("role", String(16), nullable=False),
    Column("public_id", String(64), nullable=False),
    Column("partner", String(128)),
    Column("requesting_agency_id", String(128), nullable=False),
    Column("requesting_request_id", String(255), nullable=False),
    Column("supplying_request_id", String(255)),
    Column("status", String(64), nullable=False),
    Column("title", Text),
    Column("patron_id", String(255)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("needs_attention", Boolean(), nullable=False, server_default=false()),
    Column("state", _json_type(), nullable=False),
    Column("version", Integer(), nullable=False, server_default=text("1")),
    # When the machine next needs the clock (answer timeout, retry date, due date).
    Column("next_timer_at", UTCDateTime()),
    # Patron + normalised item: flags a possible duplicate borrowing request.
    Column("duplicate_key", String(512)),
    _one_of("role", ROLES, "role"),
    UniqueConstraint("public_id"),
    UniqueConstraint("role", "requesting_agency_id", "requesting_request_id"),
    # Staff lists: newest first, by status or not, read as an index range (node/store/search.py).
    Index(None, "role", "status", "updated_at", "id"),
    Index(None, "role", "updated_at", "id"),
    Index("ix_transactions_needs_attention", "role", "updated_at", "id",
          sqlite_where=text("needs_attention = 1"), postgresql_where=text("needs_attention")),
    Index(None, "supplying_request_id"),
    Index(None, "next_timer_at"),
    Index(None, "duplicate_key"),
    # The desk's case-insensitive lookups (migration 0004): the partner filter, newest
    # first, as an index range; receive by the lender's request id.
    Index("ix_transactions_lower_partner_role_updated_at_id",
          func.lower(text("partner")), "role", "updated_at", "id"),
    Index("ix_transactions_lower_supplying_request_id", func.lower(text("supplying_request_id"))),
    # Staff search by the requester's request id or the patron id, in any case (migration
    # 0005: they replace the plain indexes, so inserting a request costs no more).
    Index("ix_transactions_lower_requesting_request_id",
          func.lower(text("requesting_request_id"))),
    Index("ix_transactions_lower_patron_id", func.lower(text("patron_id"))),
)

attempts = Table(
    "attempts",
    metadata,
    _pk(),
    Column(
        "transaction_id",
        _id_type(),
        ForeignKey("transactions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer(), nullable=False),
    Column("partner", String(128), nullable=False),
    Column("requesting_request_id", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("requesting_request_id"),
    UniqueConstraint("transaction_id", "seq"),
    # Staff search by the id we gave a lender, in any case (migration 0005).
    Index("ix_attempts_lower_requesting_request_id", func.lower(text("requesting_request_id"))),
)

# Kept by triggers (migration 0003, node/store/search.py), not by the service code:
# requests per (role, status) for the staff lists' facets, summed over shards so that
# concurrent PostgreSQL writers rarely wait on one row; and every item barcode a
# request names (lending: located and shipped items; borrowing: temporary barcodes).
status_counts = Table(
    "status_counts",
    metadata,
    Column("role", String(16), primary_key=True),
    Column("status", String(64), primary_key=True),
    Column("shard", Integer(), primary_key=True),
    Column("n", BigInteger(), nullable=False),
)

request_barcodes = Table(
    "request_barcodes",
    metadata,
    Column("barcode", String(255), primary_key=True),
    Column(
        "transaction_id",
        _id_type(),
        ForeignKey("transactions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Index(None, "transaction_id"),
    # Scans at the desk match any case (check-in, return, the ?barcode= filter).
    Index("ix_request_barcodes_lower_barcode", func.lower(text("barcode"))),
)

# --------------------------------------------------------------------------- message log

messages = Table(
    "messages",
    metadata,
    _pk(),
    Column(
        "transaction_id",
        _id_type(),
        ForeignKey("transactions.id", ondelete="SET NULL"),
    ),
    Column("direction", String(3), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("peer", String(128)),
    Column("requesting_request_id", String(255)),
    Column("status", String(64)),
    Column("action", String(64)),
    Column("reason", String(64)),
    Column("message_status", String(16)),
    Column("raw", Text, nullable=False),
    # sha256 hex of sender+kind+id+timestamp+body; set for incoming messages only.
    Column("digest", String(64)),
    Column("confirmation", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    _one_of("direction", DIRECTIONS, "direction"),
    UniqueConstraint("digest"),
    Index(None, "transaction_id"),
    Index(None, "requesting_request_id"),
)

# --------------------------------------------------------------------------- outbox

outbox = Table(
    "outbox",
    metadata,
    _pk(),
    # NULL only for messages that belong to no transaction; those are not ordered.
    Column(
        "transaction_id",
        _id_type(),
        ForeignKey("transactions.id", ondelete="CASCADE"),
    ),
    Column("peer", String(128), nullable=False),
    Column("url", Text, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("body", LargeBinary(), nullable=False),
    Column("state", String(16), nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer(), nullable=False, server_default=text("0")),
    # An attempt's outcome is unknown (a timeout, a broken connection, a worker gone):
    # the peer may hold the message, and answer ERROR when it comes again (0008).
    Column("maybe_delivered", Boolean(), nullable=False, server_default=false()),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("last_http_status", Integer()),
    Column("last_attempt_at", UTCDateTime()),
    Column("locked_by", String(128)),
    Column("locked_until", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Column("confirmation", LargeBinary()),
    _one_of("state", OUTBOX_STATES, "state"),
    Index(None, "state", "next_attempt_at"),
    Index(None, "transaction_id", "id"),
    # The admin's partners screen, peer by peer (node/store/partner_status.py).
    Index(None, "peer", "state", "sent_at"),
)

# --------------------------------------------------------------------------- history

history = Table(
    "history",
    metadata,
    _pk(),
    Column(
        "transaction_id",
        _id_type(),
        ForeignKey("transactions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("event", String(64), nullable=False),
    Column("detail", _json_type()),
    Index(None, "transaction_id", "at"),
)

# --------------------------------------------------------------------------- holdings

holdings_records = Table(
    "holdings_records",
    metadata,
    _pk(),
    Column("record_id", String(255), nullable=False),  # the library's local record id
    Column("title", Text),
    Column("author", Text),
    Column("publisher", Text),
    Column("publication_date", String(64)),
    Column("edition", Text),
    Column("title_key", String(255)),  # normalised title for matching
    Column("author_key", String(255)),  # normalised author for matching
    Column("extra", _json_type()),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("record_id"),
    Index(None, "title_key"),
    Index(None, "author_key"),
)

holdings_identifiers = Table(
    "holdings_identifiers",
    metadata,
    _pk(),
    Column(
        "record_id",
        String(255),
        ForeignKey("holdings_records.record_id", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(8), nullable=False),
    Column("value", String(255), nullable=False),  # normalised (ISBN-13, ISSN without hyphen...)
    _one_of("kind", IDENTIFIER_KINDS, "kind"),
    UniqueConstraint("record_id", "kind", "value"),
    Index(None, "kind", "value"),
)

holdings_items = Table(
    "holdings_items",
    metadata,
    _pk(),
    Column(
        "record_id",
        String(255),
        ForeignKey("holdings_records.record_id", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
    ),
    Column("barcode", String(255), nullable=False),
    Column("call_number", String(255)),
    Column("location", String(255)),
    Column("status", String(32), nullable=False, server_default=text("'available'")),
    Column("due_date", Date()),
    Column("updated_at", UTCDateTime(), nullable=False),
    _one_of("status", ITEM_STATUSES, "status"),
    UniqueConstraint("barcode"),
    Index(None, "record_id"),
    Index("ix_holdings_items_lower_barcode", func.lower(text("barcode"))),
)

# --------------------------------------------------------------------------- closures

closures = Table(
    "closures",
    metadata,
    _pk(),
    Column("kind", String(16), nullable=False),
    Column("active", Boolean(), nullable=False, server_default=false()),
    Column("start", Date()),
    Column("end", Date()),
    Column("note", Text),
    Column("set_by", String(255)),
    Column("set_at", UTCDateTime()),
    _one_of("kind", CLOSURE_KINDS, "kind"),
    UniqueConstraint("kind"),
)

partner_closures = Table(
    "partner_closures",
    metadata,
    _pk(),
    Column("symbol", String(128), nullable=False),
    Column("start", Date()),
    Column("end", Date()),
    Column("note", Text),
    Column("learned_at", UTCDateTime(), nullable=False),
    UniqueConstraint("symbol"),
)

__all__ = [
    "CLOSURE_KINDS",
    "DIRECTIONS",
    "IDENTIFIER_KINDS",
    "ITEM_STATUSES",
    "OUTBOX_STATES",
    "ROLES",
    "UTCDateTime",
    "attempts",
    "closures",
    "history",
    "holdings_identifiers",
    "holdings_items",
    "holdings_records",
    "messages",
    "metadata",
    "outbox",
    "partner_closures",
    "request_barcodes",
    "status_counts",
    "transactions",
]
