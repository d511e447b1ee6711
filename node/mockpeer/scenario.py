"""The illmock scenario language (NOTES.md section 7), as pure functions.

A supplier's scenario comes from a ``MOCK:<supplyingAgencyIdValue>:<SCENARIO>``
token in ``serviceInfo/note`` (the token ends at any of ``#,; \\t\\r\\n``, so
one note can script every supplier of a rota), else from
``bibliographicInfo/supplierUniqueRecordId``; empty or unknown gives UNFILLED.
``RETRY:<REASON>_<NEXT>`` answers the first request with RetryPossible and
a later ``requestType=Retry`` request with ``<NEXT>`` (or nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.protocol.codes import RequestType, ServiceType, Status
from node.protocol.messages import Request

_TOKEN_END = "#,; \t\r\n"

# scenario -> (statuses sent one after the other, overdue after Received, recalled after Received)
PLAIN: dict[str, tuple[tuple[Status, ...], bool, bool]] = {
    "WILLSUPPLY": ((Status.WILL_SUPPLY,), False, False),
    "WILLSUPPLY_LOANED": ((Status.WILL_SUPPLY, Status.LOANED), False, False),
    "WILLSUPPLY_LOANED_RECALLED": ((Status.WILL_SUPPLY, Status.LOANED), False, True),
    "WILLSUPPLY_LOANED_OVERDUE": ((Status.WILL_SUPPLY, Status.LOANED), True, False),
    "WILLSUPPLY_UNFILLED": ((Status.WILL_SUPPLY, Status.UNFILLED), False, False),
    "UNFILLED": ((Status.UNFILLED,), False, False),
    "LOANED": ((Status.LOANED,), False, False),
    "LOANED_RECALLED": ((Status.LOANED,), False, True),
    "LOANED_OVERDUE": ((Status.LOANED,), True, False),
}

# RETRY:<name> -> ReasonRetry sent with RetryPossible ("LoanCondition" is illmock's own value)
RETRY_REASONS = {
    "COST": "CostExceedsMaxCost",
    "ONLOAN": "OnLoan",
    "COND": "LoanCondition",
    "NOTFOUNDASCITED": "NotFoundAsCited",
}

SPECIAL = ("COMPLETED", "ERROR", "HTTP-ERROR-400", "HTTP-ERROR-500")
ALL_SCENARIOS = tuple(PLAIN) + SPECIAL + tuple(f"RETRY:{r}" for r in RETRY_REASONS)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a supplier does with one request."""

    scenario: str
    statuses: tuple[Status, ...] = ()
    overdue: bool = False
    recalled: bool = False
    reason_retry: str | None = None
    error: str | None = None  # "ERROR" -> an ERROR confirmation
    http_status: int | None = None  # HTTP-ERROR-400/500


def note_token(note: str | None, supplier_value: str) -> str:
    """The scenario a ``MOCK:<supplier>:<SCENARIO>`` token in ``note`` gives this supplier.

    Every token is looked at, so one note can script several suppliers; "" if none is ours.
    """
    if not note:
        return ""
    start = 0
    while True:
        idx = note.find("MOCK:", start)
        if idx < 0:
            return ""
        value = note[idx + 5:]
        end = min((value.find(c) for c in _TOKEN_END if c in value), default=-1)
        if end >= 0:
            value = value[:end]
        symbol, sep, scenario = value.partition(":")
        if sep and symbol == supplier_value:
            return scenario
        start = idx + 5


def scenario_for(request: Request) -> str:
    """The scenario for a request, after the Retry rule ("" = a retry with nothing next)."""
    supplier = request.header.supplying_agency_id
    note = request.service_info.note if request.service_info else None
    scenario = note_token(note, supplier.value if supplier else "")
    if not scenario:
        scenario = request.bibliographic_info.supplier_unique_record_id or ""
    if not scenario:
        return "UNFILLED"
    if not scenario.startswith("RETRY"):
        return scenario
    head, sep, nxt = scenario.partition("_")
    is_retry = (request.service_info is not None
                and request.service_info.request_type is RequestType.RETRY)
    if is_retry:
        return nxt if sep else ""
    return head


def plan_for(request: Request) -> Plan:
    scenario = scenario_for(request)
    if scenario == "":
        return Plan(scenario="")
    if scenario in PLAIN:
        statuses, overdue, recalled = PLAIN[scenario]
        return Plan(scenario=scenario, statuses=statuses, overdue=overdue, recalled=recalled)
    if scenario.startswith("RETRY:") and scenario[6:] in RETRY_REASONS:
        return Plan(scenario=scenario, statuses=(Status.RETRY_POSSIBLE,),
                    reason_retry=RETRY_REASONS[scenario[6:]])
    if scenario == "COMPLETED":
        copy = (request.service_info is not None
                and request.service_info.service_type is ServiceType.COPY)
        return Plan(scenario=scenario,
                    statuses=(Status.COPY_COMPLETED if copy else Status.LOAN_COMPLETED,))
    if scenario == "ERROR":
        return Plan(scenario=scenario, error="MOCK ERROR")
    if scenario in ("HTTP-ERROR-400", "HTTP-ERROR-500"):
        return Plan(scenario=scenario, http_status=int(scenario[-3:]))
    return Plan(scenario=scenario, statuses=(Status.UNFILLED,))
