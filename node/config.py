"""The node's configuration: TOML parsed once into frozen, typed objects.

``load(path)`` / ``loads(text)`` return a :class:`NodeConfig` or raise
:class:`ConfigError` listing *every* problem found (wrong types, unknown keys,
missing keys, bad symbols, URLs, enum values, cross references ...), each
with the key path and, where it can be found, the line in the source.

``tomllib`` gives no positions for keys, so :class:`_Locator` scans the
(already valid) TOML text and maps key paths such as ``partners[1].url`` to
line numbers. Indexes in key paths count from 0, like the Python lists.

Nothing here reads the environment or touches the disk at import time.
"""

from __future__ import annotations

import bisect
import difflib
import enum
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from node import tls
from node.protocol.codes import ServiceType, Status, Version

__all__ = [
    "AgencySymbol",
    "BorrowingPolicy",
    "Closure",
    "ConfigError",
    "ConfigProblem",
    "HoldingsSettings",
    "IncomingAuth",
    "LendingPolicy",
    "Limits",
    "NodeConfig",
    "NodeSection",
    "OutboxSettings",
    "OutgoingAuth",
    "Partner",
    "PartnerAuth",
    "RetryPolicy",
    "Rota",
    "StaffAccount",
    "StaffRole",
    "default_config_text",
    "load",
    "loads",
    "security_warnings",
]

T = TypeVar("T")

MIB = 1024 * 1024
DEFAULT_LISTEN = "127.0.0.1:8080"
MAX_PROCESSES = 64  # [node] processes: more on one machine is a typo, not a plan
DEFAULT_DATABASE_FILE = "ill.db"


def _empty_mapping() -> Mapping[str, str]:
    return MappingProxyType({})


# --------------------------------------------------------------------------
# Problems


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigProblem:
    """One problem in a configuration file.

    ``key`` is the key path (``partners[1].url``; "" for the file as a whole),
    ``line`` the 1-based line it was found on (or the header line of the table
    a missing key belongs in; None when unknown), ``source`` the file name
    used in messages.
    """

    key: str
    line: int | None
    message: str
    source: str | None = None

    @property
    def path(self) -> str:
        """Alias of ``key``."""
        return self.key

    def __str__(self) -> str:
        where = self.source or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """Bad configuration; ``problems`` lists all of them, in line order."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class AgencySymbol:
    """An ISO 18626 agency id, written ``TYPE:VALUE`` (e.g. ``ISIL:XX-1``).

    ``type`` is an open code (ISIL, ...). Equality and hashing ignore case,
    ``str()`` gives back the text as configured.
    """

    type: str
    value: str

    @classmethod
    def parse(cls, text: str) -> AgencySymbol:
        """Parse ``"TYPE:VALUE"``; raise ValueError if it is not one."""
        if not isinstance(text, str):
            raise TypeError(f"agency symbol must be a string, not {type(text).__name__}")
        stripped = text.strip()
        kind, sep, value = stripped.partition(":")
        if not sep or not kind or not value or any(c.isspace() for c in stripped):
            raise ValueError(f"must be an agency symbol TYPE:VALUE, e.g. ISIL:XX-1 (got {text!r})")
        return cls(type=kind, value=value)

    @property
    def key(self) -> tuple[str, str]:
        """Case-folded (type, value): what equality compares."""
        return (self.type.casefold(), self.value.casefold())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AgencySymbol):
            return self.key == other.key
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Closure:
    """'Temporarily inactive for lending/borrowing', as in Alma.

    Active with no dates: closed until the flag is cleared. ``start`` only:
    closed from then on; ``end`` only: closed until then (inclusive).
    """

    active: bool = False
    start: date | None = None
    end: date | None = None
    note: str = ""

    def applies_on(self, day: date) -> bool:
        """True when active and ``day`` falls in the (inclusive, optional) range."""
        if not self.active:
            return False
        if isinstance(day, datetime):
            day = day.date()
        if self.start is not None and day < self.start:
            return False
        return self.end is None or day <= self.end

    def describe(self, kind: str = "Lending") -> str:
        """E.g. "Lending suspended 2026-12-20 to 2027-01-05" (kind: Lending/Borrowing)."""
        if self.start is not None and self.end is not None:
            return f"{kind} suspended {self.start.isoformat()} to {self.end.isoformat()}"
        if self.end is not None:
            return f"{kind} suspended until {self.end.isoformat()}"
        if self.start is not None:
            return f"{kind} suspended from {self.start.isoformat()} until further notice"
        return f"{kind} suspended until further notice"

    def range_problem(self) -> str | None:
        """What is wrong with the dates, for the config, the staff API and the CLI."""
        if self.start is not None and self.end is not None and self.end < self.start:
            return f"end {self.end.isoformat()} is before start {self.start.isoformat()}"
        return None

    def reopens(self) -> date | None:
        """The first day after the closure, or None when it has no end."""
        return self.end + timedelta(days=1) if self.end is not None else None


class RetryPolicy(enum.StrEnum):
    """Borrowing: what to do on RetryPossible with a retryAfter before needed-by."""

    RETRY = "retry"  # ask the same partner again after retryAfter
    NEXT = "next"  # move on to the next lender in the rota


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    READ_ONLY = "read-only"


STAFF_SIDES = ("lending", "borrowing")


# --------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSection:
    """``[node]``. ``database_url`` is the async SQLAlchemy URL
    (``sqlite+aiosqlite:///...`` or ``postgresql+asyncpg://...``)."""

    symbol: AgencySymbol
    name: str
    public_url: str
    database_url: str
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    # Node processes serving ``listen`` together (node/processes.py); above 1 needs PostgreSQL.
    processes: int = 1
    iso18626_version: Version = Version.V1_2
    # Security (issue 7). Paths are absolute (resolved against the config's directory).
    tls_cert: Path | None = None  # serve HTTPS with this certificate chain (PEM)...
    tls_key: Path | None = None  # ... and its private key
    tls_client_ca: Path | None = None  # accept client certificates issued by these (PEM bundle)
    tls_ca: Path | None = None  # verify partners' HTTPS servers against these (default: system)
    client_cert: Path | None = None  # the client certificate we present to HTTPS partners...
    client_key: Path | None = None  # ... and its private key
    signing_key: bytes | None = field(default=None, repr=False)  # our Ed25519 private key (PEM)
    signing_key_id: str | None = None  # the key id we send in X-ILL-Key-Id (default: our symbol)
    patron_secret: str | None = field(default=None, repr=False)  # HMAC key of patron tokens

    @property
    def listen(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """``[limits]``: what we accept over HTTP."""

    max_body_bytes: int = MIB
    max_xml_depth: int = 64
    request_timeout_seconds: float = 30.0
    max_connections: int = 256
    partner_requests_per_minute: int = 600
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 75.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxSettings:
    """``[outbox]``: the durable send queue."""

    timeout_seconds: float = 30.0
    max_attempts: int = 20
    initial_backoff_seconds: float = 2.0
    max_backoff_seconds: float = 3600.0
    poll_seconds: float = 1.0
    # Delivered messages are deleted from the outbox after this many days (0: kept);
    # the message log keeps every message.
    keep_sent_days: int = 90


@dataclass(frozen=True, slots=True, kw_only=True)
class LendingPolicy:
    """``[lending]``: how we answer partners' requests."""

    auto_answer: bool = True
    found_status: Status = Status.WILL_SUPPLY  # or EXPECT_TO_SUPPLY
    when_on_loan: Status = Status.RETRY_POSSIBLE  # or UNFILLED
    loan_period_days: int = 28
    auto_renew: bool = True
    renew_period_days: int = 28
    auto_cancel: bool = True
    location_preference: tuple[str, ...] = ()
    non_lendable_locations: tuple[str, ...] = ()
    closure: Closure = Closure()


@dataclass(frozen=True, slots=True, kw_only=True)
class BorrowingPolicy:
    """``[borrowing]``: how we ask partners."""

    answer_timeout_hours: float = 72.0
    retry_policy: RetryPolicy = RetryPolicy.RETRY
    auto_accept_costs: bool = True
    pickup_locations: tuple[str, ...] = ()  # empty: not checked
    closure: Closure = Closure()


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingAuth:
    """``[partners.auth.incoming]``: what a partner must present to us. Every
    method that is set is required (all must pass); none set: no check."""

    account_id: str | None = field(default=None, repr=False)
    security_code: str | None = field(default=None, repr=False)
    header_name: str | None = None
    header_value: str | None = field(default=None, repr=False)
    public_key: bytes | None = field(default=None, repr=False)  # Ed25519, raw 32 bytes
    client_cert_sha256: str | None = None  # lower-case hex, no colons

    @property
    def methods(self) -> tuple[str, ...]:
        out = []
        if self.account_id is not None or self.security_code is not None:
            out.append("security_code")
        if self.header_name is not None:
            out.append("header")
        if self.public_key is not None:
            out.append("signature")
        if self.client_cert_sha256 is not None:
            out.append("client_cert")
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingAuth:
    """``[partners.auth.outgoing]``: what we present to a partner."""

    account_id: str | None = field(default=None, repr=False)
    security_code: str | None = field(default=None, repr=False)
    header_name: str | None = None
    header_value: str | None = field(default=None, repr=False)
    sign: bool = False  # sign bodies with node.signing_key


@dataclass(frozen=True, slots=True, kw_only=True)
class PartnerAuth:
    """``[partners.auth]``: per direction."""

    incoming: IncomingAuth = IncomingAuth()
    outgoing: OutgoingAuth = OutgoingAuth()


@dataclass(frozen=True, slots=True, kw_only=True)
class Partner:
    """One ``[[partners]]`` entry."""

    symbol: AgencySymbol
    name: str
    url: str
    iso18626_version: Version = Version.V1_2
    lend_to: bool = True
    borrow_from: bool = True
    closure_reply: Status = Status.UNFILLED  # or RETRY_POSSIBLE
    auth: PartnerAuth = field(default=PartnerAuth(), hash=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rota:
    """One ``[[rotas]]`` entry: the lenders to ask, in order."""

    name: str
    service_types: tuple[ServiceType, ...] = tuple(ServiceType)
    formats: tuple[str, ...] = ()  # empty: any format
    partners: tuple[AgencySymbol, ...] = ()

    def serves(self, service_type: ServiceType | str, fmt: str | None = None) -> bool:
        """Serves this service type, and ``fmt`` passes the format filter."""
        st = _service_type(service_type)
        if st is None or st not in self.service_types:
            return False
        if not self.formats:
            return True
        return fmt is not None and fmt.strip().casefold() in {f.casefold() for f in self.formats}


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldingsSettings:
    """``[holdings]``: optional overrides for the holdings importers."""

    csv_columns: Mapping[str, str] = field(default_factory=_empty_mapping, hash=False)
    marc_mapping: Mapping[str, str] = field(default_factory=_empty_mapping, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffAccount:
    """One ``[[staff]]`` entry. ``token_sha256``: lower-case hex, or None.

    ``sides``: the sides ("lending", "borrowing") the account may act on; it reads both.
    """

    name: str
    role: StaffRole
    token_sha256: str | None = None
    sides: tuple[str, ...] = STAFF_SIDES


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    node: NodeSection
    limits: Limits = Limits()
    outbox: OutboxSettings = OutboxSettings()
    lending: LendingPolicy = LendingPolicy()
    borrowing: BorrowingPolicy = BorrowingPolicy()
    partners: tuple[Partner, ...] = ()
    rotas: tuple[Rota, ...] = ()
    holdings: HoldingsSettings = HoldingsSettings()
    staff: tuple[StaffAccount, ...] = ()
    source_path: Path | None = None
    # Key paths holding a secret written in the file itself (not ``${ENV_VAR}``).
    inline_secrets: tuple[str, ...] = ()
    # The partners by symbol as configured, and case-folded: built once, since every
    # message looks its partner up, and a consortium hub has hundreds.
    partners_by_symbol: Mapping[str, Partner] = field(init=False, repr=False, compare=False)
    _partners_by_key: Mapping[tuple[str, str], Partner] = field(init=False, repr=False,
                                                                compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partners_by_symbol",
                           MappingProxyType({str(p.symbol): p for p in self.partners}))
        object.__setattr__(self, "_partners_by_key", {p.symbol.key: p for p in self.partners})

    def partner(self, symbol: str | AgencySymbol) -> Partner | None:
        """The configured partner with this symbol (case-insensitive), or None."""
        if not isinstance(symbol, AgencySymbol):
            found = self.partners_by_symbol.get(symbol)
            if found is not None:
                return found
            try:
                symbol = AgencySymbol.parse(symbol)
            except ValueError:
                return None
        return self._partners_by_key.get(symbol.key)

    def rota_for(self, service_type: ServiceType | str, fmt: str | None = None) -> Rota | None:
        """The rota for a request: the first rota whose format filter names
        ``fmt``, else the first with no format filter, among the rotas serving
        ``service_type`` (exact match; CopyOrLoan is its own service type)."""
        serving = [r for r in self.rotas if r.serves(service_type, fmt)]
        for rota in serving:
            if rota.formats:
                return rota
        return serving[0] if serving else None


def _service_type(value: ServiceType | str) -> ServiceType | None:
    if isinstance(value, ServiceType):
        return value
    try:
        return ServiceType.lookup(str(value))
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Locating keys in the TOML source

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\r\n#]*")
_TOML_ERROR_POS = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)\s*$")

PathT = tuple[str | int, ...]


class _Locator:
    """Maps key paths to 1-based line numbers by scanning valid TOML text.

    Records table headers (``[a.b]``), array-of-tables elements (``[[a]]``,
    counted per occurrence, nested ones resolved against the latest element),
    ``key = value`` lines including dotted keys, inline tables and the
    elements of arrays. Best effort: a surprise just stops the scan.
    """

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.lines: dict[PathT, int] = {}
        self._aot: dict[PathT, int] = {}
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        try:
            self._scan()
        except (IndexError, ValueError, AttributeError, tomllib.TOMLDecodeError):
            pass

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """The line of ``path`` or of its nearest recorded ancestor."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    # -- scanning
    def _line(self) -> int:
        return bisect.bisect_right(self._starts, self.pos)

    def _at(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def _skip_space(self) -> None:
        n = len(self.text)
        while self.pos < n and self.text[self.pos] in " \t":
            self.pos += 1

    def _skip_blank(self) -> None:
        n = len(self.text)
        while self.pos < n:
            c = self.text[self.pos]
            if c in " \t\r\n":
                self.pos += 1
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break

    def _expect(self, s: str) -> None:
        self._skip_space()
        if not self._at(s):
            raise ValueError(f"expected {s!r} at {self.pos}")
        self.pos += len(s)

    def _scan(self) -> None:
        current: PathT = ()
        while True:
            self._skip_blank()
            if self.pos >= len(self.text):
                return
            line = self._line()
            if self._at("[["):
                self.pos += 2
                key = self._key()
                self._expect("]]")
                base = self._resolve(key[:-1]) + (key[-1],)
                index = self._aot.get(base, -1) + 1
                self._aot[base] = index
                current = base + (index,)
                self.lines.setdefault(base, line)
                self.lines[current] = line
            elif self._at("["):
                self.pos += 1
                key = self._key()
                self._expect("]")
                current = self._resolve(key)
                self.lines.setdefault(current, line)
            else:
                key = self._key()
                self._expect("=")
                self._record_key(current, key, line)
                self._value(current + key)

    def _resolve(self, key: tuple[str, ...]) -> PathT:
        out: PathT = ()
        for part in key:
            out += (part,)
            if out in self._aot:
                out += (self._aot[out],)
        return out

    def _record_key(self, prefix: PathT, key: tuple[str, ...], line: int) -> None:
        for i in range(1, len(key) + 1):
            self.lines.setdefault(prefix + key[:i], line)

    def _key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self._skip_space()
            if self._at('"'):
                start = self.pos
                self._basic_string()
                parts.append(tomllib.loads("k = " + self.text[start : self.pos])["k"])
            elif self._at("'"):
                end = self.text.index("'", self.pos + 1)
                parts.append(self.text[self.pos + 1 : end])
                self.pos = end + 1
            else:
                m = _BARE_KEY.match(self.text, self.pos)
                if m is None:
                    raise ValueError(f"no key at {self.pos}")
                parts.append(m.group())
                self.pos = m.end()
            self._skip_space()
            if self._at("."):
                self.pos += 1
                continue
            return tuple(parts)

    def _basic_string(self) -> None:
        i = self.pos + 1
        while self.text[i] != '"':
            i += 2 if self.text[i] == "\\" else 1
        self.pos = i + 1

    def _multiline(self, delim: str) -> None:
        self.pos += 3
        while True:
            if delim == '"""' and self.text[self.pos] == "\\":
                self.pos += 2
            elif self._at(delim):
                self.pos += 3
                for _ in range(2):  # up to two quotes may end the content
                    if self.pos < len(self.text) and self.text[self.pos] == delim[0]:
                        self.pos += 1
                return
            else:
                self.pos += 1

    def _value(self, path: PathT) -> None:
        self._skip_space()
        if self._at('"""') or self._at("'''"):
            self._multiline(self.text[self.pos : self.pos + 3])
        elif self._at('"'):
            self._basic_string()
        elif self._at("'"):
            self.pos = self.text.index("'", self.pos + 1) + 1
        elif self._at("["):
            self.pos += 1
            index = 0
            while True:
                self._skip_blank()
                if self._at("]"):
                    self.pos += 1
                    return
                self.lines.setdefault(path + (index,), self._line())
                self._value(path + (index,))
                index += 1
                self._skip_blank()
                if self._at(","):
                    self.pos += 1
        elif self._at("{"):
            self.pos += 1
            while True:
                self._skip_blank()
                if self._at("}"):
                    self.pos += 1
                    return
                line = self._line()
                key = self._key()
                self._expect("=")
                self._record_key(path, key, line)
                self._value(path + key)
                self._skip_blank()
                if self._at(","):
                    self.pos += 1
        else:
            m = _SCALAR.match(self.text, self.pos)
            self.pos = m.end() if m else self.pos + 1


def _format_path(path: PathT) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{text}" if out else text
    return out


# --------------------------------------------------------------------------
# Validation helpers


class _Invalid(Exception):
    """A value's problem; the message is reported against its key."""


_MISSING: Any = object()


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, datetime):
        return "a date-time"
    if isinstance(v, date):
        return "a date"
    if isinstance(v, time):
        return "a time"
    return type(v).__name__


class _Ctx:
    def __init__(
        self, locator: _Locator, source: str | None, env: Mapping[str, str] | None = None
    ):
        self.locator = locator
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.env = os.environ if env is None else env
        self.inline_secrets: list[str] = []

    def add(self, path: PathT, message: str) -> None:
        self.problems.append(
            ConfigProblem(
                key=_format_path(path),
                line=self.locator.line_of(path),
                message=message,
                source=self.source,
            )
        )


class _Table:
    """One TOML table being read: remembers which keys were asked for."""

    def __init__(self, ctx: _Ctx, data: dict[str, Any], path: PathT, present: bool = True):
        self.ctx = ctx
        self.data = data
        self.path = path
        self.present = present
        self.known: list[str] = []

    def get(
        self,
        key: str,
        conv: Callable[[Any], T],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        self.known.append(key)
        if key not in self.data:
            if required and self.present:
                self.ctx.add(self.path + (key,), f"required key '{key}' is missing")
            return default
        try:
            return conv(self.data[key])
        except _Invalid as exc:
            self.ctx.add(self.path + (key,), str(exc))
            return default if not required else None

    def get_list(
        self,
        key: str,
        conv: Callable[[Any], T],
        default: tuple[Any, ...] = (),
        *,
        required: bool = False,
        what: str = "strings",
    ) -> tuple[Any, ...] | None:
        """An array, each element converted; bad elements reported by index."""
        raw = self.get(key, _array(what), _MISSING, required=required)
        if raw is _MISSING or raw is None:
            return default if not required else None
        out = []
        for i, item in enumerate(raw):
            try:
                out.append(conv(item))
            except _Invalid as exc:
                self.ctx.add(self.path + (key, i), str(exc))
        return tuple(out)

    def get_string_map(self, key: str) -> Mapping[str, str]:
        """A table of string values (free keys); bad values reported by key."""
        raw = self.get(key, _string_table, {})
        out = {}
        for name, value in raw.items():
            if isinstance(value, str):
                out[name] = value
            else:
                self.ctx.add(self.path + (key, name), f"must be a string (got {_type_name(value)})")
        return MappingProxyType(out)

    def table(self, key: str) -> _Table:
        self.known.append(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return _Table(self.ctx, {}, self.path + (key,), present=False)
        if not isinstance(value, dict):
            self.ctx.add(self.path + (key,), f"must be a table (got {_type_name(value)})")
            return _Table(self.ctx, {}, self.path + (key,), present=False)
        return _Table(self.ctx, value, self.path + (key,))

    def array_of_tables(self, key: str) -> list[_Table]:
        self.known.append(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.ctx.add(
                self.path + (key,),
                f"must be an array of tables, written [[{_format_path(self.path + (key,))}]]",
            )
            return []
        return [_Table(self.ctx, v, self.path + (key, i)) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Report keys nobody asked for, suggesting the nearest known one."""
        for key in self.data:
            if key in self.known:
                continue
            close = difflib.get_close_matches(key, self.known, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.ctx.add(self.path + (key,), f"unknown key '{key}'{hint}")


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"must be a string (got {_type_name(v)})")
    return v


def _text(v: Any) -> str:
    s = _string(v).strip()
    if not s:
        raise _Invalid("must not be empty")
    return s


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"must be true or false (got {_type_name(v)})")
    return v


def _integer(minimum: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(f"must be an integer (got {_type_name(v)})")
        if v < minimum:
            raise _Invalid(f"must be at least {minimum} (got {v})")
        return v

    return conv


def _positive_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Invalid(f"must be a number (got {_type_name(v)})")
    if not math.isfinite(v) or v <= 0:
        raise _Invalid(f"must be a number greater than 0 (got {v})")
    return float(v)


def _choice(options: Mapping[str, T]) -> Callable[[Any], T]:
    """One of the option names (case-insensitive)."""

    def conv(v: Any) -> T:
        allowed = ", ".join(f"'{k}'" for k in options)
        if isinstance(v, str):
            for name, value in options.items():
                if name.casefold() == v.strip().casefold():
                    return value
            raise _Invalid(f"must be one of {allowed} (got {v!r})")
        raise _Invalid(f"must be one of {allowed} (got {_type_name(v)})")

    return conv


def _array(what: str) -> Callable[[Any], list[Any]]:
    def conv(v: Any) -> list[Any]:
        if not isinstance(v, list):
            raise _Invalid(f"must be an array of {what} (got {_type_name(v)})")
        return v

    return conv


def _string_table(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"must be a table of strings (got {_type_name(v)})")
    return v


def _date(v: Any) -> date:
    if isinstance(v, datetime):
        raise _Invalid("must be a date like 2026-12-20, not a date-time")
    if isinstance(v, date):
        return v
    if isinstance(v, str):
        try:
            return date.fromisoformat(v.strip())
        except ValueError:
            pass
    raise _Invalid(f"must be a date like 2026-12-20 (got {v!r})")


def _symbol(v: Any) -> AgencySymbol:
    try:
        return AgencySymbol.parse(_string(v))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _http_url(v: Any) -> str:
    s = _string(v).strip()
    try:
        parts = urlsplit(s)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in s)
    ):
        raise _Invalid(f"must be an http(s) URL (got {s!r})")
    return s


_LISTEN = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d{1,5})|(?P<host>[^\s:\[\]/]+):(?P<port>\d{1,5})"
)


def _listen(v: Any) -> tuple[str, int]:
    s = _string(v).strip()
    m = _LISTEN.fullmatch(s)
    bad = _Invalid(f"must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080 (got {s!r})")
    if m is None:
        raise bad
    if m.group("v6") is not None:
        try:
            host = str(ipaddress.IPv6Address(m.group("v6")))
        except ValueError:
            raise bad from None
        port = int(m.group("p6"))
    else:
        host, port = m.group("host"), int(m.group("port"))
    if port > 65535:
        raise _Invalid(f"port must be 0-65535 (got {port})")
    return host, port


_VERSIONS = {"1.2": Version.V1_2, "2021-2": Version.V2021_2}
_version = _choice(_VERSIONS)


def _database_url(base: Path) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        return database_url(_text(v), base)

    return conv


def database_url(text: str, base: Path) -> str:
    """Map a configured database URL to the async SQLAlchemy URL.

    ``sqlite:///rel.db`` -> ``sqlite+aiosqlite:////<base>/rel.db`` (relative
    paths against ``base``, the config file's directory; ``sqlite:////abs.db``
    stays absolute; ``sqlite://`` and ``:memory:`` are in-memory);
    ``postgresql://`` / ``postgres://`` -> ``postgresql+asyncpg://``.
    """
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _Invalid(
            f"must be a database URL: sqlite:///file.db or postgresql://user@host/db (got {text!r})"
        )
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        if rest == "":
            return "sqlite+aiosqlite://"
        if not rest.startswith("/"):
            raise _Invalid(
                f"SQLite URLs look like sqlite:///relative.db or sqlite:////absolute.db (got {text!r})"
            )
        file, q, query = rest[1:].partition("?")
        if file in ("", ":memory:"):
            return f"sqlite+aiosqlite:///:memory:{q}{query}"
        path = Path(file)
        if not path.is_absolute():
            path = Path(os.path.normpath(base / path))
        return f"sqlite+aiosqlite:///{path}{q}{query}"
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        if not rest:
            raise _Invalid(f"PostgreSQL URLs look like postgresql://user@host/db (got {text!r})")
        return f"postgresql+asyncpg://{rest}"
    raise _Invalid(
        f"unsupported database URL scheme '{scheme}': use sqlite:///file.db or postgresql://user@host/db"
    )


# --------------------------------------------------------------------------
# Sections


def _read_node(ctx: _Ctx, root: _Table, base: Path) -> NodeSection:
    t = root.table("node")
    if not t.present and "node" not in root.data:
        ctx.add(("node",), "required table [node] is missing (it needs at least symbol and name)")
    symbol = t.get("symbol", _symbol, required=True)
    name = t.get("name", _text, required=True)
    host, port = t.get("listen", _listen, _listen(DEFAULT_LISTEN))
    listen_text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    public_url = t.get("public_url", _http_url, f"http://{listen_text}/iso18626")
    db = t.get(
        "database", _database_url(base), database_url(f"sqlite:///{DEFAULT_DATABASE_FILE}", base)
    )
    processes = t.get("processes", _integer(1), 1)
    if processes > MAX_PROCESSES:
        ctx.add(t.path + ("processes",), f"must be at most {MAX_PROCESSES} (got {processes})")
        processes = 1
    elif processes > 1 and port == 0:
        ctx.add(t.path + ("processes",), f"{processes} processes share one port: listen "
                "needs a port number, not 0 (any free port, a different one each)")
        processes = 1
    elif processes > 1 and db.startswith("sqlite"):
        # SQLite has one writer: a second process would only wait for the first's locks.
        ctx.add(t.path + ("processes",), f"{processes} processes need a PostgreSQL database "
                "(SQLite serves one process): set database = \"postgresql://...\" or processes = 1")
        processes = 1
    version = t.get("iso18626_version", _version, Version.V1_2)
    data_dir_text = t.get("data_dir", _text, None)
    data_dir = base if data_dir_text is None else Path(os.path.normpath(base / data_dir_text))
    files = {k: t.get(k, _file(base), None) for k in (
        "tls_cert", "tls_key", "tls_client_ca", "tls_ca", "client_cert", "client_key")}
    _pair(ctx, t, files["tls_cert"], files["tls_key"], "tls_cert", "tls_key")
    _pair(ctx, t, files["client_cert"], files["client_key"], "client_cert", "client_key")
    _check_tls_files(ctx, t, files)
    if "tls_client_ca" in t.data and "tls_cert" not in t.data:
        ctx.add(t.path + ("tls_client_ca",), "needs tls_cert and tls_key (client certificates "
                "are only asked for over HTTPS)")
    signing_key = t.get("signing_key", _signing_key(base), None)
    signing_key_id = t.get("signing_key_id", _text, None)
    patron_secret = _secret(t, "patron_secret")
    if patron_secret is not None and len(patron_secret) < 16:
        ctx.add(t.path + ("patron_secret",), "must be at least 16 characters")
        patron_secret = None
    t.finish()
    return NodeSection(
        symbol=symbol,
        name=name,
        public_url=public_url,
        database_url=db,
        data_dir=data_dir,
        listen_host=host,
        listen_port=port,
        processes=processes,
        iso18626_version=version,
        signing_key=signing_key,
        signing_key_id=signing_key_id,
        patron_secret=patron_secret,
        **files,
    )


# -- secrets and files (issue 7) ---------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _secret(t: _Table, key: str, *, nonempty: bool = True) -> str | None:
    """A secret string: ``${VAR}`` parts come from the environment (an unset
    variable is a problem); a literal secret is remembered for check-config."""
    raw = t.get(key, _string, None)
    if raw is None:
        return None
    path = t.path + (key,)
    if not _ENV_REF.search(raw):
        t.ctx.inline_secrets.append(_format_path(path))
        value = raw
    else:
        missing = [m.group(1) for m in _ENV_REF.finditer(raw) if m.group(1) not in t.ctx.env]
        if missing:
            t.ctx.add(path, f"environment variable {missing[0]} is not set")
            return None
        value = _ENV_REF.sub(lambda m: t.ctx.env[m.group(1)], raw)
    if nonempty and not value:
        t.ctx.add(path, "must not be empty")
        return None
    return value


def _file(base: Path) -> Callable[[Any], Path]:
    """A path (relative to the config's directory) to a readable file."""

    def conv(v: Any) -> Path:
        path = Path(os.path.normpath(base / _text(v)))
        if not path.is_file():
            raise _Invalid(f"no such file: {path}")
        if not os.access(path, os.R_OK):
            raise _Invalid(f"cannot read {path}")
        return path

    return conv


def _signing_key(base: Path) -> Callable[[Any], bytes]:
    """An Ed25519 private key: a PEM file (``ill-node keys generate``)."""

    def conv(v: Any) -> bytes:
        path = _file(base)(v)
        data = path.read_bytes()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise _Invalid(f"{path} is not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise _Invalid(f"{path} is not an Ed25519 key")
        return data

    return conv


def _public_key(base: Path) -> Callable[[Any], bytes]:
    """An Ed25519 public key: the one-line base64 ``ill-node keys generate`` prints,
    the PEM text itself, or the path of a PEM file. Returns the raw 32 bytes."""

    def conv(v: Any) -> bytes:
        import base64
        import binascii

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            PublicFormat,
            load_pem_public_key,
        )

        text = _text(v)
        if not text.startswith("-----BEGIN"):
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) == 32:
                return raw
            text = _file(base)(text).read_text("utf-8", "replace")
        try:
            key = load_pem_public_key(text.encode())
        except (ValueError, TypeError):
            raise _Invalid("must be an Ed25519 public key: base64, PEM text or a PEM file") from None
        if not isinstance(key, Ed25519PublicKey):
            raise _Invalid("must be an Ed25519 public key (this is another kind of key)")
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    return conv


def _fingerprint(v: Any) -> str:
    s = _text(v).replace(":", "").lower()
    if not _SHA256.fullmatch(s):
        raise _Invalid("must be a SHA-256 fingerprint: 64 hexadecimal digits (colons allowed)")
    return s


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_name(v: Any) -> str:
    s = _text(v)
    if not _HEADER_NAME.fullmatch(s):
        raise _Invalid(f"must be an HTTP header name (got {s!r})")
    if s.lower() in ("content-type", "content-length", "host", "authorization"):
        raise _Invalid(f"{s} cannot carry a credential here")
    return s


def _read_incoming_auth(ctx: _Ctx, t: _Table, base: Path) -> IncomingAuth:
    out = IncomingAuth(
        account_id=_secret(t, "account_id"),
        security_code=_secret(t, "security_code"),
        header_name=t.get("header_name", _header_name, None),
        header_value=_secret(t, "header_value"),
        public_key=t.get("public_key", _public_key(base), None),
        client_cert_sha256=t.get("client_cert_sha256", _fingerprint, None),
    )
    _pair(ctx, t, out.header_name, out.header_value, "header_name", "header_value")
    t.finish()
    return out


def _read_outgoing_auth(ctx: _Ctx, t: _Table) -> OutgoingAuth:
    out = OutgoingAuth(
        account_id=_secret(t, "account_id"),
        security_code=_secret(t, "security_code"),
        header_name=t.get("header_name", _header_name, None),
        header_value=_secret(t, "header_value"),
        sign=t.get("sign", _boolean, False),
    )
    _pair(ctx, t, out.header_name, out.header_value, "header_name", "header_value")
    t.finish()
    return out


def _pair(ctx: _Ctx, t: _Table, a: Any, b: Any, a_key: str, b_key: str) -> None:
    """Two keys that only make sense together."""
    if (a_key in t.data) != (b_key in t.data):
        present, missing = (a_key, b_key) if a_key in t.data else (b_key, a_key)
        ctx.add(t.path + (present,), f"needs {missing} too")


def _check_tls_files(ctx: _Ctx, t: _Table, files: Mapping[str, Path | None]) -> None:
    """Certificates and keys that TLS cannot use are said here, at check-config and on a
    reload, with their line, not as a failed start or failed handshakes later."""
    for ca_key in ("tls_client_ca", "tls_ca"):
        if files[ca_key] is not None and not tls.holds_certificates(files[ca_key]):
            ctx.add(t.path + (ca_key,), f"{files[ca_key]} holds no PEM certificate")
    for cert_key, key_key in (("tls_cert", "tls_key"), ("client_cert", "client_key")):
        cert, key = files[cert_key], files[key_key]
        if cert is None or key is None:
            continue
        if not tls.holds_certificates(cert):
            ctx.add(t.path + (cert_key,), f"{cert} holds no PEM certificate")
        elif problem := tls.key_problem(cert, key):
            ctx.add(t.path + (key_key,), f"{key}: {problem}")


def _read_partner_auth(ctx: _Ctx, t: _Table, base: Path) -> PartnerAuth:
    auth = t.table("auth")
    out = PartnerAuth(
        incoming=_read_incoming_auth(ctx, auth.table("incoming"), base),
        outgoing=_read_outgoing_auth(ctx, auth.table("outgoing")),
    )
    auth.finish()
    return out


def _read_limits(root: _Table) -> Limits:
    t = root.table("limits")
    d = Limits()
    out = Limits(
        max_body_bytes=t.get("max_body_bytes", _integer(1), d.max_body_bytes),
        max_xml_depth=t.get("max_xml_depth", _integer(1), d.max_xml_depth),
        request_timeout_seconds=t.get(
            "request_timeout_seconds", _positive_number, d.request_timeout_seconds
        ),
        max_connections=t.get("max_connections", _integer(1), d.max_connections),
        partner_requests_per_minute=t.get(
            "partner_requests_per_minute", _integer(1), d.partner_requests_per_minute
        ),
        header_timeout_seconds=t.get(
            "header_timeout_seconds", _positive_number, d.header_timeout_seconds
        ),
        keepalive_timeout_seconds=t.get(
            "keepalive_timeout_seconds", _positive_number, d.keepalive_timeout_seconds
        ),
    )
    t.finish()
    return out


def _read_outbox(ctx: _Ctx, root: _Table) -> OutboxSettings:
    t = root.table("outbox")
    d = OutboxSettings()
    out = OutboxSettings(
        timeout_seconds=t.get("timeout_seconds", _positive_number, d.timeout_seconds),
        max_attempts=t.get("max_attempts", _integer(1), d.max_attempts),
        initial_backoff_seconds=t.get(
            "initial_backoff_seconds", _positive_number, d.initial_backoff_seconds
        ),
        max_backoff_seconds=t.get("max_backoff_seconds", _positive_number, d.max_backoff_seconds),
        poll_seconds=t.get("poll_seconds", _positive_number, d.poll_seconds),
        keep_sent_days=t.get("keep_sent_days", _integer(0), d.keep_sent_days),
    )
    if out.max_backoff_seconds < out.initial_backoff_seconds:
        ctx.add(
            t.path + ("max_backoff_seconds",),
            f"must not be less than initial_backoff_seconds ({out.initial_backoff_seconds:g})",
        )
    t.finish()
    return out


def _read_closure(ctx: _Ctx, parent: _Table) -> Closure:
    t = parent.table("closure")
    active = t.get("active", _boolean, False)
    start = t.get("start", _date, None)
    end = t.get("end", _date, None)
    note = t.get("note", _string, "")
    closure = Closure(active=active, start=start, end=end, note=note.strip())
    if problem := closure.range_problem():
        ctx.add(t.path + ("end",), problem)
    t.finish()
    return closure


_FOUND = {"WillSupply": Status.WILL_SUPPLY, "ExpectToSupply": Status.EXPECT_TO_SUPPLY}
_NOT_NOW = {"RetryPossible": Status.RETRY_POSSIBLE, "Unfilled": Status.UNFILLED}
_CLOSURE_REPLY = {"Unfilled": Status.UNFILLED, "RetryPossible": Status.RETRY_POSSIBLE}
_SERVICE_TYPES = {s.value: s for s in ServiceType}
_RETRY = {p.value: p for p in RetryPolicy}
_ROLES = {r.value: r for r in StaffRole}


def _read_lending(ctx: _Ctx, root: _Table) -> LendingPolicy:
    t = root.table("lending")
    d = LendingPolicy()
    out = LendingPolicy(
        auto_answer=t.get("auto_answer", _boolean, d.auto_answer),
        found_status=t.get("found_status", _choice(_FOUND), d.found_status),
        when_on_loan=t.get("when_on_loan", _choice(_NOT_NOW), d.when_on_loan),
        loan_period_days=t.get("loan_period_days", _integer(1), d.loan_period_days),
        auto_renew=t.get("auto_renew", _boolean, d.auto_renew),
        renew_period_days=t.get("renew_period_days", _integer(1), d.renew_period_days),
        auto_cancel=t.get("auto_cancel", _boolean, d.auto_cancel),
        location_preference=t.get_list("location_preference", _text, d.location_preference),
        non_lendable_locations=t.get_list(
            "non_lendable_locations", _text, d.non_lendable_locations
        ),
        closure=_read_closure(ctx, t),
    )
    t.finish()
    return out


def _read_borrowing(ctx: _Ctx, root: _Table) -> BorrowingPolicy:
    t = root.table("borrowing")
    d = BorrowingPolicy()
    out = BorrowingPolicy(
        answer_timeout_hours=t.get(
            "answer_timeout_hours", _positive_number, d.answer_timeout_hours
        ),
        retry_policy=t.get("retry_policy", _choice(_RETRY), d.retry_policy),
        auto_accept_costs=t.get("auto_accept_costs", _boolean, d.auto_accept_costs),
        pickup_locations=t.get_list("pickup_locations", _text, d.pickup_locations),
        closure=_read_closure(ctx, t),
    )
    t.finish()
    return out


def _read_partners(
    ctx: _Ctx, root: _Table, ours: AgencySymbol | None, default_version: Version,
    base: Path | None = None,
) -> tuple[list[Partner], dict[AgencySymbol, Partner]]:
    partners: list[Partner] = []
    by_symbol: dict[AgencySymbol, Partner] = {}
    first_index: dict[AgencySymbol, int] = {}
    for i, t in enumerate(root.array_of_tables("partners")):
        symbol = t.get("symbol", _symbol, required=True)
        name = t.get("name", _text, None)
        partner = Partner(
            symbol=symbol,
            name=name if name is not None else (str(symbol) if symbol else ""),
            url=t.get("url", _http_url, required=True),
            iso18626_version=t.get("iso18626_version", _version, default_version),
            lend_to=t.get("lend_to", _boolean, True),
            borrow_from=t.get("borrow_from", _boolean, True),
            closure_reply=t.get("closure_reply", _choice(_CLOSURE_REPLY), Status.UNFILLED),
            auth=_read_partner_auth(ctx, t, base or Path.cwd()),
        )
        if partner.auth.outgoing.sign and signing_key_missing(ctx, root):
            ctx.add(t.path + ("auth", "outgoing", "sign"),
                    "needs node.signing_key (make one with: ill-node keys generate --out DIR)")
        t.finish()
        partners.append(partner)
        if symbol is None:
            continue
        if ours is not None and symbol == ours:
            ctx.add(t.path + ("symbol",), f"'{symbol}' is our own symbol (node.symbol)")
        elif symbol in first_index:
            ctx.add(
                t.path + ("symbol",),
                f"duplicate partner symbol '{symbol}' (also partners[{first_index[symbol]}])",
            )
        else:
            first_index[symbol] = i
            by_symbol[symbol] = partner
    return partners, by_symbol


def signing_key_missing(ctx: _Ctx, root: _Table) -> bool:
    node = root.data.get("node")
    return not isinstance(node, dict) or "signing_key" not in node


def _read_rotas(ctx: _Ctx, root: _Table, by_symbol: dict[AgencySymbol, Partner]) -> list[Rota]:
    rotas: list[Rota] = []
    names: dict[str, int] = {}
    for i, t in enumerate(root.array_of_tables("rotas")):
        name = t.get("name", _text, required=True)
        if name is not None:
            if name.casefold() in names:
                ctx.add(
                    t.path + ("name",),
                    f"duplicate rota name '{name}' (also rotas[{names[name.casefold()]}])",
                )
            else:
                names[name.casefold()] = i
        service_types = t.get_list(
            "service_types", _choice(_SERVICE_TYPES), tuple(ServiceType), what="service types"
        )
        if service_types is not None and not service_types and "service_types" in t.data:
            ctx.add(
                t.path + ("service_types",),
                "must name at least one of 'Loan', 'Copy', 'CopyOrLoan'",
            )
        formats = t.get_list("formats", _text, ())
        raw_partners = t.get("partners", _array("agency symbols"), required=True)
        members: list[AgencySymbol] = []
        if raw_partners is not None:
            if not raw_partners:
                ctx.add(t.path + ("partners",), "must name at least one partner")
            for j, item in enumerate(raw_partners):
                where = t.path + ("partners", j)
                try:
                    symbol = _symbol(item)
                except _Invalid as exc:
                    ctx.add(where, str(exc))
                    continue
                partner = by_symbol.get(symbol)
                if partner is None:
                    ctx.add(where, f"unknown partner '{symbol}' (not among [[partners]])")
                elif partner.borrow_from is False:
                    ctx.add(where, f"partner '{symbol}' has borrow_from = false")
                elif partner.symbol in members:
                    ctx.add(where, f"partner '{symbol}' is listed twice")
                else:
                    members.append(partner.symbol)
        t.finish()
        rotas.append(
            Rota(
                name=name,
                service_types=tuple(dict.fromkeys(service_types or ())),
                formats=formats or (),
                partners=tuple(members),
            )
        )
    return rotas


def _read_holdings(root: _Table) -> HoldingsSettings:
    t = root.table("holdings")
    out = HoldingsSettings(
        csv_columns=t.get_string_map("csv_columns"),
        marc_mapping=t.get_string_map("marc_mapping"),
    )
    t.finish()
    return out


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _token_sha256(v: Any) -> str:
    s = _string(v).strip()
    if not _SHA256.fullmatch(s):
        raise _Invalid("must be a SHA-256 digest: 64 hexadecimal characters")
    return s.lower()


def _read_staff(ctx: _Ctx, root: _Table) -> list[StaffAccount]:
    accounts: list[StaffAccount] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(root.array_of_tables("staff")):
        name = t.get("name", _text, required=True)
        if name is not None:
            if name.casefold() in seen:
                ctx.add(
                    t.path + ("name",),
                    f"duplicate staff name '{name}' (also staff[{seen[name.casefold()]}])",
                )
            else:
                seen[name.casefold()] = i
        accounts.append(
            StaffAccount(
                name=name,
                role=t.get("role", _choice(_ROLES), required=True),
                token_sha256=t.get("token_sha256", _token_sha256, None),
                sides=_staff_sides(t),
            )
        )
        t.finish()
    return accounts


def _staff_sides(t: _Table) -> tuple[str, ...]:
    sides = t.get_list("sides", _choice({s: s for s in STAFF_SIDES}), STAFF_SIDES, what="sides")
    if t.data.get("sides") == []:
        t.ctx.add(t.path + ("sides",), 'must name at least one of "lending", "borrowing"')
    return tuple(dict.fromkeys(sides or STAFF_SIDES))


# --------------------------------------------------------------------------
# Entry points


def loads(
    text: str,
    source_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Parse configuration text. ``source_path`` names the file in messages
    and anchors relative paths (default: the current directory). ``${VAR}``
    in secrets is taken from ``env`` (default: ``os.environ``)."""
    source = str(source_path) if source_path is not None else None
    resolved = Path(source_path).resolve() if source_path is not None else None
    base = resolved.parent if resolved is not None else Path.cwd()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_ERROR_POS.search(message)
        line: int | None = None
        if m:
            message = message[: m.start()]
            line = int(m.group(1)) if m.group(1) else text.count("\n") + 1
        problem = ConfigProblem(
            key="", line=line, message=f"invalid TOML: {message}", source=source
        )
        raise ConfigError([problem]) from None

    ctx = _Ctx(_Locator(text), source, env)
    root = _Table(ctx, data, ())
    node = _read_node(ctx, root, base)
    limits = _read_limits(root)
    outbox = _read_outbox(ctx, root)
    lending = _read_lending(ctx, root)
    borrowing = _read_borrowing(ctx, root)
    partners, by_symbol = _read_partners(ctx, root, node.symbol, node.iso18626_version, base)
    rotas = _read_rotas(ctx, root, by_symbol)
    holdings = _read_holdings(root)
    staff = _read_staff(ctx, root)
    root.finish()
    if ctx.problems:
        ordered = sorted(ctx.problems, key=lambda p: (p.line is None, p.line or 0))
        raise ConfigError(ordered)
    return NodeConfig(
        node=node,
        limits=limits,
        outbox=outbox,
        lending=lending,
        borrowing=borrowing,
        partners=tuple(partners),
        rotas=tuple(rotas),
        holdings=holdings,
        staff=tuple(staff),
        source_path=resolved,
        inline_secrets=tuple(ctx.inline_secrets),
    )


def load(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and parse a configuration file."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem(key="", line=None, message=f"cannot read file: {reason}", source=source)]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                ConfigProblem(
                    key="", line=line, message="invalid TOML: not UTF-8 text", source=source
                )
            ]
        ) from None
    return loads(text, source_path=path)


def security_warnings(config: NodeConfig) -> list[str]:
    """What ``ill-node check-config`` warns about: secrets other users can read,
    a node open to the network without staff accounts, partners unauthenticated."""
    out: list[str] = []

    def world_readable(path: Path | None) -> bool:
        try:
            return path is not None and bool(path.stat().st_mode & 0o004)
        except OSError:
            return False

    if config.inline_secrets and world_readable(config.source_path):
        out.append(
            f"{config.source_path} is world-readable and holds secrets "
            f"({', '.join(config.inline_secrets)}): chmod 600 it, or use ${{ENV_VAR}} references"
        )
    for key in ("tls_key", "client_key"):
        path = getattr(config.node, key)
        if world_readable(path):
            out.append(f"node.{key}: {path} is world-readable: chmod 600 it")
    loopback = config.node.listen_host in ("127.0.0.1", "::1", "localhost")
    if not config.staff and not loopback:
        out.append(
            "no [[staff]] accounts: the staff API only answers requests from this host "
            "(add one with: ill-node staff add NAME --role admin --config FILE)"
        )
    for p in config.partners:
        if not p.auth.incoming.methods:
            out.append(
                f"partner {p.symbol} has no [partners.auth.incoming]: anyone who can reach "
                "this node can send messages in its name"
            )
    return out


# --------------------------------------------------------------------------
# Starter configuration (``ill-node init``)


def _toml_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def default_config_text(
    symbol: str,
    name: str,
    listen: str = DEFAULT_LISTEN,
    public_url: str | None = None,
    partners: Iterable[Partner | Mapping[str, Any]] = (),
) -> str:
    """A working, commented starter configuration.

    ``partners``: :class:`Partner` objects or mappings with ``symbol``,
    ``url`` and optionally ``name``, ``iso18626_version``. They are all put
    in one ``default`` rota, in the order given.
    """
    if public_url is None:
        public_url = f"http://{listen}/iso18626"
    entries: list[tuple[str, str, str, str]] = []
    for p in partners:
        if isinstance(p, Partner):
            entries.append((str(p.symbol), p.name, p.url, p.iso18626_version.value))
        else:
            sym = str(p["symbol"])
            entries.append(
                (
                    sym,
                    str(p.get("name") or sym),
                    str(p["url"]),
                    str(p.get("iso18626_version", "1.2")),
                )
            )

    q = _toml_string
    out = [
        "# ill-node configuration. Every key is documented in config.example.toml;",
        "# keys left out take their defaults. Check it with: ill-node check-config FILE",
        "",
        "[node]",
        f"symbol = {q(symbol)}  # our agency id, TYPE:VALUE (e.g. ISIL:XX-1)",
        f"name = {q(name)}  # our library's name",
        f"listen = {q(listen)}  # host:port the HTTP server binds to",
        f"public_url = {q(public_url)}  # the URL partners send ISO 18626 messages to",
        '# database = "sqlite:///ill.db"  # default: ill.db next to this file; or postgresql://user@host/db',
        '# iso18626_version = "1.2"  # the version we write by default: "1.2" or "2021-2"',
        "",
        "[lending]",
        "auto_answer = true  # answer incoming requests automatically from the holdings",
        'found_status = "WillSupply"  # when an item is available: "WillSupply" or "ExpectToSupply"',
        'when_on_loan = "RetryPossible"  # when all copies are out: "RetryPossible" or "Unfilled"',
        "loan_period_days = 28  # loan period we give",
        "",
        "[lending.closure]  # temporarily inactive for lending",
        "active = false",
        "# start = 2026-12-20  # optional first closed day",
        "# end = 2027-01-05    # optional last closed day",
        "",
        "[borrowing]",
        "answer_timeout_hours = 72  # move on to the next lender when a lender does not answer",
        'retry_policy = "retry"  # on RetryPossible: "retry" the same lender or go to the "next"',
        "",
        "[borrowing.closure]  # temporarily inactive for borrowing",
        "active = false",
    ]
    for sym, pname, url, version in entries:
        out += [
            "",
            "[[partners]]",
            f"symbol = {q(sym)}  # the partner's agency id",
            f"name = {q(pname)}",
            f"url = {q(url)}  # where we send them ISO 18626 messages",
            f"iso18626_version = {q(version)}  # the version we write to them",
            "lend_to = true  # we accept their requests",
            "borrow_from = true  # we may ask them (see [[rotas]])",
        ]
    if entries:
        members = ", ".join(q(e[0]) for e in entries)
        out += [
            "",
            "[[rotas]]  # lenders to ask, in order",
            'name = "default"',
            'service_types = ["Loan", "Copy", "CopyOrLoan"]',
            f"partners = [{members}]",
        ]
    else:
        out += [
            "",
            "# [[partners]]",
            '# symbol = "ISIL:XX-OTHER"',
            '# url = "http://partner.example.org/iso18626"',
            "",
            "# [[rotas]]",
            '# name = "default"',
            '# partners = ["ISIL:XX-OTHER"]',
        ]
    return "\n".join(out) + "\n"
