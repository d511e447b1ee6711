"""The borrowing side, pure: the request form, the rota and the transition table."""

from .form import BorrowingForm, FormError, duplicate_key, parse_form
from .machine import (
    TRANSITIONS,
    BorrowingContext,
    BorrowingInput,
    BorrowingRequest,
    BorrowingState,
    StaffAction,
    create,
    delivery_failed,
    next_timer,
    receive,
    staff,
    tick,
)
from .rota import (
    EntryState,
    RotaEntry,
    add_partner,
    build_rota,
    move_entry,
    remove_entry,
    reorder_pending,
)

__all__ = [
    "TRANSITIONS",
    "BorrowingContext",
    "BorrowingForm",
    "BorrowingInput",
    "BorrowingRequest",
    "BorrowingState",
    "EntryState",
    "FormError",
    "RotaEntry",
    "StaffAction",
    "add_partner",
    "build_rota",
    "create",
    "delivery_failed",
    "duplicate_key",
    "move_entry",
    "next_timer",
    "parse_form",
    "receive",
    "remove_entry",
    "reorder_pending",
    "staff",
    "tick",
]
