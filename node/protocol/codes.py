"""ISO 18626 code lists.

Closed lists (schema enumerations, ISO 18626:2017 clause 8 / :2021 clause 9)
are Enums; every conformant application must support all their values.
Open lists (Annex B) are free strings carrying an optional scheme URI: they
are modelled by :class:`Code`, and the defaults are kept here as sets so
that readers can normalise the case of well-known values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NAMESPACE = "http://illtransactions.org/2013/iso18626"
OPEN_CODE_SCHEME = "http://illtransactions.org/ISO18626/OpenCodeList/{name}List-V1.0"


class Version(enum.StrEnum):
    """Schema versions we read and write. 1.1-shaped messages read as V1_2."""

    V1_2 = "1.2"
    V2021_2 = "2021-2"

    @classmethod
    def parse(cls, text: str) -> Version:
        """'1.2', '2021-2' (also '2021', '2021-1', '2021-3': all written as 2021-2)."""
        text = text.strip()
        if text.startswith("2021"):
            return cls.V2021_2
        if text in ("1.0", "1.1", "1.2"):
            return cls.V1_2
        raise ValueError(f"unknown ISO 18626 version {text!r} (expected 1.2 or 2021-2)")


class _Closed(enum.StrEnum):
    """A closed code list. ``lookup`` is the lenient reader: any case.

    Members are strings too (``Status.LOANED == "Loaned"``), so JSON state and
    configuration compare without conversions.
    """

    @classmethod
    def lookup(cls, text: str):
        key = text.strip().lower()
        for member in cls:
            if member.value.lower() == key:
                return member
        raise ValueError(text)


class RequestType(_Closed):
    NEW = "New"
    RETRY = "Retry"
    REMINDER = "Reminder"


class RequestSubType(_Closed):
    BOOKING_REQUEST = "BookingRequest"
    MULTIPLE_ITEM_REQUEST = "MultipleItemRequest"
    PATRON_REQUEST = "PatronRequest"
    TRANSFER_REQUEST = "TransferRequest"
    SUPPLYING_LIBRARYS_CHOICE = "SupplyingLibrarysChoice"


class ServiceType(_Closed):
    COPY = "Copy"
    LOAN = "Loan"
    COPY_OR_LOAN = "CopyOrLoan"


class PreferredEdition(_Closed):
    """2021 only (replaces v1.2's anyEdition Y/N)."""

    MOST_RECENT_EDITION = "MostRecentEdition"
    THIS_EDITION = "ThisEdition"
    ANY_EDITION = "AnyEdition"


class ReasonForMessage(_Closed):
    REQUEST_RESPONSE = "RequestResponse"
    STATUS_REQUEST_RESPONSE = "StatusRequestResponse"
    RENEW_RESPONSE = "RenewResponse"
    CANCEL_RESPONSE = "CancelResponse"
    STATUS_CHANGE = "StatusChange"
    NOTIFICATION = "Notification"


class Action(_Closed):
    STATUS_REQUEST = "StatusRequest"
    RECEIVED = "Received"
    CANCEL = "Cancel"
    RENEW = "Renew"
    SHIPPED_RETURN = "ShippedReturn"
    SHIPPED_FORWARD = "ShippedForward"
    NOTIFICATION = "Notification"
    HOLD_RETURN = "HoldReturn"  # 2021
    LOST = "Lost"  # 2021


class Status(_Closed):
    REQUEST_RECEIVED = "RequestReceived"
    EXPECT_TO_SUPPLY = "ExpectToSupply"
    WILL_SUPPLY = "WillSupply"
    LOANED = "Loaned"
    OVERDUE = "Overdue"
    RECALLED = "Recalled"
    RETRY_POSSIBLE = "RetryPossible"
    UNFILLED = "Unfilled"
    COPY_COMPLETED = "CopyCompleted"
    LOAN_COMPLETED = "LoanCompleted"
    COMPLETED_WITHOUT_RETURN = "CompletedWithoutReturn"
    CANCELLED = "Cancelled"
    HOLD_RETURN = "HoldReturn"  # 2021
    RELEASE_HOLD_RETURN = "ReleaseHoldReturn"  # 2021


class ErrorType(_Closed):
    """Written the British way (as the schemas do); read either way."""

    UNSUPPORTED_ACTION_TYPE = "UnsupportedActionType"
    UNSUPPORTED_REASON_FOR_MESSAGE_TYPE = "UnsupportedReasonForMessageType"
    UNRECOGNISED_DATA_ELEMENT = "UnrecognisedDataElement"
    UNRECOGNISED_DATA_VALUE = "UnrecognisedDataValue"
    BADLY_FORMED_MESSAGE = "BadlyFormedMessage"

    @classmethod
    def lookup(cls, text: str) -> ErrorType:
        return super().lookup(text.replace("Unrecognized", "Unrecognised"))


class MessageStatus(_Closed):
    OK = "OK"
    ERROR = "ERROR"


class YesNo(_Closed):
    Y = "Y"
    N = "N"


# Statuses after which a supplier sends nothing more about the request.
TERMINAL_STATUSES = frozenset(
    {
        Status.UNFILLED,
        Status.RETRY_POSSIBLE,
        Status.CANCELLED,
        Status.COPY_COMPLETED,
        Status.LOAN_COMPLETED,
        Status.COMPLETED_WITHOUT_RETURN,
    }
)


@dataclass(frozen=True, slots=True)
class Code:
    """A value from an open code list, with the scheme URI it came with."""

    value: str
    scheme: str | None = None

    def __str__(self) -> str:
        return self.value


# Annex B defaults for open lists whose case readers normalise.
OPEN_LISTS: dict[str, frozenset[str]] = {
    "AgencyIdType": frozenset({"ISIL", "DNUCNI", "ICOLC"}),
    "BibliographicItemIdentifierCode": frozenset(
        {"ISBN", "ISSN", "ISMN", "DOI", "Handle", "ILII", "NBN", "URN"}
    ),
    "BibliographicRecordIdentifierCode": frozenset(
        {"AMICUS", "BL", "FAUST", "JNB", "LA", "LCCN", "Medline", "NCID", "OCLC", "PID",
         "PMID", "TP"}
    ),
    "BillingMethod": frozenset(
        {"Account", "FreeOfCharge", "Invoice", "Other", "ReciprocityAgreement"}
    ),
    "DeliveryMethod": frozenset(
        {"ArticleExchange", "Ariel", "Courier", "Email", "FTP", "Mail", "Odyssey", "URL"}
    ),
    "ElectronicAddressType": frozenset({"Chat", "Email", "FTP", "Skype"}),
    "LoanCondition": frozenset(
        {"LibraryUseOnly", "WatchLibraryUseOnly", "NoReproduction", "SignatureRequired",
         "SpecCollSupervReq"}
    ),
    "ReasonRetry": frozenset(
        {"AtBindery", "CostExceedsMaxCost", "NotCurrentAvailableForILL", "NotFoundAsCited",
         "OnLoan", "OnOrder", "ReqDelDateNotPossible", "ReqDelMethodNotSupp", "LoanPossible",
         "CourierNotSupp", "MultiVolAvail", "MustMeetLoanCondition", "ReqEditionNotPossible",
         "ReqFormatNotPossible", "ReqPayMethodNotSupported", "ReqServLevelNotSupp",
         "ReqServTypeNotPossible"}
    ),
    "ReasonUnfilled": frozenset(
        {"NonCirculating", "NotAvailableForILL", "NotHeld", "NotOnShelf", "PolicyProblem",
         "PoorCondition"}
    ),
    "ServiceLevel": frozenset({"Express", "Normal", "Rush", "SecondaryMail", "Standard", "Urgent"}),
    "CostType": frozenset({"Insurance", "InsuranceCoverage", "Packaging", "Service", "Shipping",
                           "Tax"}),
    "CourierName": frozenset({"DB Schenker", "DHL", "Fedex", "PostNord AB", "UPS"}),
    "ItemFormat": frozenset(
        {"Blu-ray", "Braille", "CassetteTape", "CD", "CD-ROM", "Daisy-ROM", "DVD", "EPUB",
         "EPUB2", "EPUB3", "JPEG", "LargePrint", "LP", "Microform", "MP3", "Multimedia",
         "PaperCopy", "PDF", "Printed", "Tape", "TIFF", "UltraHD", "VHS"}
    ),
    "PatronType": frozenset(
        {"Adult", "Child", "DoctoralStudent", "Faculty", "GraduateStudent",
         "PostdoctoralResearcher", "PostgraduateStudent", "Researcher", "Staff", "Student",
         "UnderGraduateStudent"}
    ),
    "PaymentMethod": frozenset(
        {"BankTransfer", "CreditCard", "DebitCard", "EFTS", "IBS", "IIBS", "IFLAVoucher", "IFM",
         "LAPS", "Paypal"}
    ),
    "PublicationType": frozenset(
        {"ArchiveMaterial", "Article", "AudioBook", "Book", "Chapter", "ConferenceProc", "Game",
         "GovernmentPubl", "Image", "Journal", "Manuscript", "Map", "Movie", "MusicRecording",
         "MusicScore", "Newspaper", "Patent", "Report", "SoundRecording", "Thesis"}
    ),
}


_CANONICAL: dict[str, dict[str, str]] = {}


def _canonical(list_name: str) -> dict[str, str]:
    table = _CANONICAL.get(list_name)
    if table is None:
        table = {v.lower(): v for v in OPEN_LISTS.get(list_name, ())}
        _CANONICAL[list_name] = table
    return table


def normalise_open(list_name: str, value: str, scheme: str | None = None) -> Code:
    """Give a well-known open-list value its canonical case; keep others as sent."""
    stripped = value.strip()
    return Code(_canonical(list_name).get(stripped.lower(), stripped), scheme)
