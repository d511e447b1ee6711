"""The two pure machines against each other, with the codec as the wire.

Like h11's ``ConnectionPair``: a borrowing library and a lending library,
each a plain state object; every message one side sends is serialised,
parsed back (so the codec is on the path) and fed to the other side.  No
sockets, no database, no clock but the one we hand in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from node.borrower import machine as borrower
from node.borrower.form import parse_form
from node.borrower.rota import build_rota
from node.config import AgencySymbol, BorrowingPolicy, LendingPolicy, Partner, Rota
from node.protocol import reader, writer
from node.protocol.codes import Status, Version
from node.protocol.messages import (
    AgencyId,
    Envelope,
    Request,
    RequestingAgencyMessage,
    SupplyingAgencyMessage,
)
from node.supplier import machine as supplier
from node.supplier.locate import HoldingsItem, HoldingsRecord, locate

BORROWER = "ISIL:XX-BORROW"
LENDER = "ISIL:XX-LEND"
HOLDINGS = [HoldingsRecord(record_id="r1", title="Moby Dick", author="Melville, Herman",
                           isbns=("9780140449136",), items=(HoldingsItem(barcode="BC1",
                                                                          location="MAIN"),))]


class Pair:
    """One borrower request and the lender transactions it causes."""

    def __init__(self, version: Version = Version.V1_2):
        self.version = version
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
        self.lender_partner = Partner(symbol=AgencySymbol.parse(LENDER), name="Lender",
                                      url="http://lender/iso18626", iso18626_version=version)
        self.borrower_partner = Partner(symbol=AgencySymbol.parse(BORROWER), name="Borrower",
                                        url="http://borrower/iso18626", iso18626_version=version)
        self.lending = LendingPolicy()
        self.borrowing = BorrowingPolicy()
        self.borrow: borrower.BorrowingRequest | None = None
        self.lend: supplier.LendingTransaction | None = None
        self.wire: list[str] = []  # what crossed, for assertions

    def bctx(self) -> borrower.BorrowingContext:
        return borrower.BorrowingContext(
            our_symbol=AgencyId.parse(BORROWER), policy=self.borrowing, closure=None,
            partners={LENDER: self.lender_partner}, closed_partners={}, now=self.now)

    def lctx(self) -> supplier.LendingContext:
        return supplier.LendingContext(
            our_symbol=AgencyId.parse(LENDER), policy=self.lending, closure=None,
            partner=self.borrower_partner, now=self.now)

    def _over_the_wire(self, message):
        """Serialise and parse again: what the other side really receives."""
        data = writer.serialise(Envelope(version=self.version, message=message), validate=True)
        return reader.parse(data).message

    def run(self, result, side: str) -> None:
        """Store ``result`` for ``side`` and deliver what it sends until both are quiet."""
        queue = [(side, result)]
        while queue:
            side, result = queue.pop(0)
            if side == "borrower":
                self.borrow = result.state
            else:
                self.lend = result.state
            for message in result.send:
                received = self._over_the_wire(message)
                self.wire.append(_describe(received))
                if isinstance(received, Request):
                    located = locate(received, HOLDINGS, self.lending)
                    queue.append(("lender", supplier.receive_request(
                        received, ctx=self.lctx(), located=located)))
                elif isinstance(received, RequestingAgencyMessage):
                    queue.append(("lender", supplier.receive_action(
                        self.lend, received, ctx=self.lctx())))
                elif isinstance(received, SupplyingAgencyMessage):
                    queue.append(("borrower", borrower.receive(
                        self.borrow, received, ctx=self.bctx())))

    def create(self, **fields) -> None:
        form = parse_form({"patron_id": "P1", "pickup_location": "MAIN", **fields},
                          policy=self.borrowing, partners={LENDER: self.lender_partner},
                          rotas=(Rota(name="default", partners=(AgencySymbol.parse(LENDER),)),))
        rota = build_rota(form, rotas=(Rota(name="default",
                                            partners=(AgencySymbol.parse(LENDER),)),),
                          partners={LENDER: self.lender_partner}, closed_partners={},
                          today=self.now.date())
        self.run(borrower.create(form, ctx=self.bctx(), rota=rota, public_id="B-1"), "borrower")

    def borrower_does(self, **action) -> None:
        act = borrower.StaffAction.from_json({"actor": "staff:test", **action})
        self.run(borrower.staff(self.borrow, act, ctx=self.bctx()), "borrower")

    def lender_does(self, **action) -> None:
        act = supplier.StaffAction.from_json({"by": "test", **action})
        self.run(supplier.staff(self.lend, act, ctx=self.lctx()), "lender")


def _describe(message) -> str:
    if isinstance(message, Request):
        return "request"
    if isinstance(message, RequestingAgencyMessage):
        return f"action:{message.action.value}"
    return f"status:{message.status_info.status.value}/{message.message_info.reason_for_message.value}"


def _loan_to_completion(version: Version) -> Pair:
    pair = Pair(version)
    pair.create(title="Moby Dick", isbn="9780140449136")
    assert pair.borrow.state.value == "will_supply"
    assert pair.lend.status is Status.WILL_SUPPLY
    pair.lender_does(action="ship", barcodes=["BC1"],
                     due_date=(pair.now.date() + timedelta(days=28)).isoformat())
    assert pair.borrow.state.value == "shipped"
    pair.borrower_does(action="receive", barcodes=["T-1"])
    pair.borrower_does(action="loan_to_patron")
    pair.borrower_does(action="renew")
    assert pair.borrow.due_date.date() > date(2026, 12, 21)
    pair.borrower_does(action="patron_return")
    pair.borrower_does(action="return_to_partner")
    pair.lender_does(action="check_in")
    return pair


def test_a_loan_runs_to_completion_on_both_sides():
    pair = _loan_to_completion(Version.V1_2)
    assert pair.borrow.state.value == "complete"
    assert pair.lend.status is Status.LOAN_COMPLETED
    assert pair.wire == [
        "request", "status:WillSupply/RequestResponse", "status:Loaned/StatusChange",
        "action:Received", "action:Renew", "status:Loaned/RenewResponse",
        "action:ShippedReturn", "status:LoanCompleted/StatusChange",
    ]


def test_the_same_loan_in_2021_2():
    pair = _loan_to_completion(Version.V2021_2)
    assert pair.borrow.state.value == "complete"
    assert pair.lend.status is Status.LOAN_COMPLETED


def test_unheld_item_ends_the_rota():
    pair = Pair()
    pair.create(title="A book nobody has")
    assert pair.lend.status is Status.UNFILLED
    assert pair.borrow.state.value == "unfilled"
    assert pair.wire == ["request", "status:Unfilled/RequestResponse"]


def test_cancel_before_shipping_is_accepted_by_the_lender():
    pair = Pair()
    pair.create(title="Moby Dick")
    pair.borrower_does(action="cancel", reason="patron no longer needs it")
    assert pair.lend.status is Status.CANCELLED
    assert pair.borrow.state.value == "cancelled"
    assert pair.wire[-2:] == ["action:Cancel", "status:Cancelled/CancelResponse"]
