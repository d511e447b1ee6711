"""``ill-node demo``: three libraries on loopback, and the stories our users live.

:func:`run_demo` starts three nodes in this event loop (one aiohttp
``AppRunner``/``TCPSite`` each, free loopback ports), each with its own
database and a configuration generated with
:func:`node.config.default_config_text`:

- **Alpha** borrows; its rota is ``[Beta, Gamma]``;
- **Beta** lends, but is closed for lending (a closure around today);
- **Gamma** lends.

Every library lists the other two as partners and has sample holdings
(``node/demo_data/*.csv``) loaded.  The stories then drive the nodes only
through their staff JSON API, exactly as staff would, and wait for states by
polling it.  Each story prints one line per step; a step that does not reach
the state it needs within the timeout fails its story, showing the request's
history.  The run ends with a table of every request's path and final state
on both sides; the exit code is 0 only when every story ended as it should.

Stories are data (:class:`Story`): :func:`run_demo` takes the list to run,
so a test can add one that is meant to fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from .config import NodeConfig, default_config_text, load
from .http import create_app
from .service import Node
from .store import db, holdings_repo
from .supplier import holdings

__all__ = ["DEFAULT_STORIES", "Demo", "StepFailed", "Story", "run_demo"]

MARKER = ".ill-node-demo"  # marks a directory this command made (and may recreate)
STAFF = "demo"

# The outbox is tuned for loopback: messages go out at once, retries come fast.
OUTBOX_SECTION = """
[outbox]  # tuned for the demo: loopback partners, quick retries
timeout_seconds = 5
max_attempts = 50
initial_backoff_seconds = 0.1
max_backoff_seconds = 2
poll_seconds = 0.1
"""


# -- the libraries --------------------------------------------------------------------------


@dataclass(frozen=True)
class LibrarySpec:
    key: str  # directory and database name
    name: str  # what the story lines call it
    symbol: str
    full_name: str
    holdings: str  # CSV in node/demo_data


LIBRARIES = (
    LibrarySpec("alpha", "Alpha", "ISIL:XX-ALPHA", "Alpha City Library", "alpha.csv"),
    LibrarySpec("beta", "Beta", "ISIL:XX-BETA", "Beta University Library", "beta.csv"),
    LibrarySpec("gamma", "Gamma", "ISIL:XX-GAMMA", "Gamma County Library", "gamma.csv"),
)


@dataclass
class Library:
    spec: LibrarySpec
    port: int
    directory: Path
    database: str | None  # configured URL; None: the default ill.db next to the config
    config: NodeConfig | None = None
    node: Node | None = None
    runner: web.AppRunner | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/iso18626"

    @property
    def config_path(self) -> Path:
        return self.directory / "config.toml"


def free_port() -> int:
    """A loopback TCP port nothing listens on, for a server started later.

    Taken below the kernel's ephemeral range: a port from there (``bind`` to port 0)
    may be taken, before the server binds it, as the local port of an outgoing
    connection (to PostgreSQL, to a peer), and the server then fails with "address
    already in use".  A port handed out lately is not handed out again."""
    low = _ephemeral_range_start()
    for _ in range(500):
        port = random.randrange(max(1024, low - 16000), low)
        if port in _RECENT_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _RECENT_PORTS.append(port)
        return port
    with socket.socket() as s:  # all taken: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=1000)


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# -- errors and results ------------------------------------------------------------------------


class StepFailed(Exception):
    """A story step did not end as it should; the text says what and shows the history."""


class DemoSetupError(Exception):
    """The demo could not start (directory, database, configuration)."""


@dataclass
class RequestRecord:
    """One request a story made (or tried to make), for the final table."""

    story: str
    title: str
    borrower: Library
    public_id: str | None = None
    refused: str | None = None  # why the borrower refused to create it


@dataclass
class StoryResult:
    story: Story
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Story:
    key: str  # short tag, printed as [key]
    title: str
    run: Callable[[Demo, StoryLog], Awaitable[None]]


# -- output -----------------------------------------------------------------------------------


def _can_encode(text: str) -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class Printer:
    """Writes lines, falling back to ASCII marks on a terminal that cannot show ✓."""

    def __init__(self, write: Callable[[str], None] | None = None):
        self._write = write
        fancy = write is not None or _can_encode("✓✗→…")
        self.ok, self.bad, self.arrow = ("✓", "✗", "→") if fancy else ("OK", "FAILED", "->")

    def __call__(self, line: str = "") -> None:
        if self._write is not None:
            self._write(line)
            return
        if not _can_encode(line):
            line = line.encode("ascii", "replace").decode("ascii")
        print(line, flush=True)


class StoryLog:
    """One story's progress lines: ``[loan] Alpha asks for ...``."""

    def __init__(self, demo: Demo, story: Story):
        self.demo = demo
        self.story = story

    def __call__(self, text: str) -> None:
        self.demo.out(f"[{self.story.key}] {text}")


# -- the running demo ---------------------------------------------------------------------------


class Demo:
    """The three running libraries and the staff-API helpers stories use."""

    def __init__(self, libraries: dict[str, Library], http: aiohttp.ClientSession,
                 out: Printer, *, today: date, lending_closure: tuple[date, date],
                 timeout: float):
        self.libraries = libraries
        self.http = http
        self.out = out
        self.today = today
        self.lending_closure = lending_closure  # Beta's
        self.timeout = timeout
        self.requests: list[RequestRecord] = []

    def __getitem__(self, key: str) -> Library:
        return self.libraries[key]

    # -- the staff API ----------------------------------------------------------

    async def api(self, lib: Library, method: str, path: str, json: Any = None
                  ) -> tuple[int, Any]:
        async with self.http.request(method, lib.url + path, json=json,
                                     headers={"X-Staff-User": STAFF}) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = {"error": await resp.text()}
            return resp.status, body

    async def view(self, lib: Library, role: str, public_id: str) -> dict[str, Any]:
        status, view = await self.api(lib, "GET", f"/api/{role}/requests/{public_id}")
        if status != 200:
            raise StepFailed(f"GET {lib.name} {role} request {public_id}: HTTP {status}: "
                             f"{_error_text(view)}")
        return view

    async def act(self, lib: Library, role: str, public_id: str, action: str,
                  **fields: Any) -> dict[str, Any]:
        """Run a staff action; a refusal fails the step with the node's reason."""
        status, view = await self.api(lib, "POST", f"/api/{role}/requests/{public_id}/actions",
                                      json={"action": action, **fields})
        if status != 200:
            current = await self.view(lib, role, public_id)
            raise StepFailed(
                f"{lib.name} {role} {public_id}: action {action!r} refused with HTTP {status}: "
                f"{_error_text(view)}\n{history_text(current)}")
        return view

    async def create_borrowing(self, lib: Library, story: str, form: dict[str, Any]
                               ) -> dict[str, Any]:
        record = RequestRecord(story=story, title=str(form.get("title")), borrower=lib)
        self.requests.append(record)
        status, view = await self.api(lib, "POST", "/api/borrowing/requests", json=form)
        if status != 201:
            record.refused = f"HTTP {status}: {_error_text(view)}"
            raise StepFailed(f"{lib.name} could not create the request: {record.refused}")
        record.public_id = view["id"]
        return view

    async def wait(self, lib: Library, role: str, public_id: str,
                   until: str | Iterable[str] | Callable[[dict[str, Any]], bool],
                   *, what: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Poll the request until ``until`` (a status, statuses, or a test on the view)."""
        if callable(until):
            test = until
            wanted = what or "the expected state"
        else:
            statuses = {until} if isinstance(until, str) else set(until)
            test = lambda v: v.get("status") in statuses
            wanted = what or " or ".join(sorted(statuses))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            view = await self.view(lib, role, public_id)
            if test(view):
                return view
            if loop.time() >= deadline:
                raise StepFailed(
                    f"timed out: {lib.name} {role} request {public_id} is "
                    f"{view.get('status')!r}, waited for {wanted}\n{history_text(view)}")
            await asyncio.sleep(0.05)

    async def lending_for(self, lender: Library, rari: str, *, timeout: float | None = None
                          ) -> dict[str, Any]:
        """The lender's request for one borrowing attempt (found by its request id)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            status, found = await self.api(lender, "GET", f"/api/lending/requests?q={rari}")
            if status == 200:
                for row in found.get("requests", []):
                    if row.get("requesting_request_id") == rari:
                        return await self.view(lender, "lending", row["id"])
            if loop.time() >= deadline:
                raise StepFailed(f"timed out: {lender.name} has no lending request for {rari}")
            await asyncio.sleep(0.05)

    def lender_by_symbol(self, symbol: str | None) -> Library | None:
        for lib in self.libraries.values():
            if symbol and lib.symbol.casefold() == symbol.casefold():
                return lib
        return None


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        text = str(body.get("error") or body)
        if body.get("errors"):
            text += " " + "; ".join(f"{k}: {v}" for k, v in body["errors"].items())
        return text
    return str(body)


def history_text(view: dict[str, Any], indent: str = "    ") -> str:
    head = (f"{indent}history of {view.get('role', '')} request {view.get('id')} "
            f"(status {view.get('status')}):")
    lines = [head]
    for h in view.get("history", []):
        summary = h.get("summary") or ""
        lines.append(f"{indent}  {h.get('at', '')[11:19]} {h.get('actor', '')}: "
                     f"{h.get('event', '')}{': ' + summary if summary else ''}")
    return "\n".join(lines)


def rota_entries(view: dict[str, Any]) -> list[dict[str, Any]]:
    state = view.get("state") or {}
    return [e for e in state.get("rota") or [] if isinstance(e, dict)]


def entry_for(view: dict[str, Any], symbol: str) -> dict[str, Any] | None:
    for entry in rota_entries(view):
        if str(entry.get("symbol", "")).casefold() == symbol.casefold():
            return entry
    return None


def due_of(view: dict[str, Any]) -> str | None:
    """The due date (YYYY-MM-DD) the borrowing or lending side holds."""
    due = (view.get("state") or {}).get("due_date")
    return str(due)[:10] if due else None


# -- the stories ---------------------------------------------------------------------------------


def _form(title: str, author: str, isbn: str, patron: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "author": author, "isbn": isbn, "patron_id": patron,
            "pickup_location": "Alpha Main Desk", "format": "physical", **extra}


async def _until_with(demo: Demo, borrower: Library, bid: str, lender: Library,
                      status: str | set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait until ``lender`` is the active lender and the borrower is in ``status``;
    return (borrower view, lender view)."""
    statuses = {status} if isinstance(status, str) else status
    view = await demo.wait(
        borrower, "borrowing", bid,
        lambda v: (v.get("partner") or "").casefold() == lender.symbol.casefold()
        and v.get("status") in statuses,
        what=f"{' or '.join(sorted(statuses))} with {lender.name}")
    lending = await demo.lending_for(lender, view["requesting_request_id"])
    return view, lending


async def story_loan(demo: Demo, say: StoryLog) -> None:
    alpha, beta, gamma = demo["alpha"], demo["beta"], demo["gamma"]
    title = "Moby Dick"
    view = await demo.create_borrowing(alpha, "loan", _form(
        title, "Herman Melville", "9780142437247", "P-1001"))
    bid = view["id"]
    say(f"{alpha.name} asks for '{title}' ({bid}); rota: "
        + ", ".join(_name(demo, e["symbol"]) for e in rota_entries(view)))

    # Beta is closed for lending: Unfilled, with the closure dates in the note.
    start, end = demo.lending_closure
    expected = f"Lending suspended {start.isoformat()} to {end.isoformat()}"
    view = await demo.wait(alpha, "borrowing", bid,
                           lambda v: (entry_for(v, beta.symbol) or {}).get("state") in (
                               "unfilled", "skipped"),
                           what=f"{beta.name} to answer")
    entry = entry_for(view, beta.symbol) or {}
    if entry.get("state") != "unfilled":
        raise StepFailed(f"{beta.name} was {entry.get('state')}, not asked and Unfilled: "
                         f"{entry.get('note')}\n{history_text(view)}")
    beta_side = await demo.lending_for(beta, entry["attempt_request_id"])
    said = _unfilled_note(beta_side, view)
    if expected not in said:
        raise StepFailed(f"{beta.name} answered Unfilled without the closure dates "
                         f"({expected!r}); it said {said!r}\n{history_text(beta_side)}")
    say(f"{beta.name} is closed for lending: Unfilled '{expected}' ({beta_side['id']})")

    view, lending = await _until_with(demo, alpha, bid, gamma, "will_supply")
    lid = lending["id"]
    say(f"{gamma.name} will supply ({lid})")

    lending = await demo.act(gamma, "lending", lid, "ship", barcodes=["GAM-0001"])
    view = await demo.wait(alpha, "borrowing", bid, "shipped")
    say(f"{gamma.name} shipped it (barcode GAM-0001, due {due_of(lending) or due_of(view)})")

    await demo.act(alpha, "borrowing", bid, "receive", barcodes=["ALPHA-TMP-1001"])
    view = await demo.wait(alpha, "borrowing", bid, {"received", "on_hold"})
    say(f"{alpha.name} received it (temporary barcode ALPHA-TMP-1001): "
        + ("on the hold shelf for P-1001" if view["status"] == "on_hold" else "in transit"))

    await demo.act(alpha, "borrowing", bid, "loan_to_patron")
    view = await demo.wait(alpha, "borrowing", bid, "on_loan")
    due_before = due_of(view)
    say(f"{alpha.name} lent it to patron P-1001 (due {due_before})")

    await demo.act(alpha, "borrowing", bid, "renew")
    view = await demo.wait(
        alpha, "borrowing", bid,
        lambda v: v.get("status") == "on_loan" and due_of(v) not in (None, due_before),
        what=f"on_loan with a due date after {due_before}")
    lending = await demo.wait(gamma, "lending", lid,
                              lambda v: due_of(v) == due_of(view),
                              what=f"{gamma.name}'s due date to be {due_of(view)} too")
    say(f"renewed by {gamma.name} (due {due_of(view)})")

    await demo.act(alpha, "borrowing", bid, "patron_return")
    await demo.wait(alpha, "borrowing", bid, "returned_by_patron")
    await demo.act(alpha, "borrowing", bid, "return_to_partner")
    await demo.wait(alpha, "borrowing", bid, "returned_to_partner")
    await demo.wait(gamma, "lending", lid, "RETURN_SHIPPED")
    say(f"patron returned it; {alpha.name} shipped it back to {gamma.name}")

    await demo.act(gamma, "lending", lid, "check_in")
    await demo.wait(gamma, "lending", lid, "LOAN_COMPLETED")
    await demo.wait(alpha, "borrowing", bid, "complete")
    say(f"{gamma.name} checked it in: complete {demo.out.ok}")


def _unfilled_note(lending: dict[str, Any], borrowing: dict[str, Any]) -> str:
    """What the closed lender said: from its history and the borrower's rota note."""
    texts = [str(h.get("summary") or "") + " " + str(h.get("note") or "")
             for h in lending.get("history", [])]
    texts += [str(m.get("raw") or "") for m in lending.get("messages", [])
              if m.get("direction") == "out"]
    for entry in rota_entries(borrowing):
        texts.append(str(entry.get("note") or ""))
    return " | ".join(t for t in texts if t.strip())


async def story_copy(demo: Demo, say: StoryLog) -> None:
    alpha, gamma = demo["alpha"], demo["gamma"]
    title = "Pride and Prejudice"
    view = await demo.create_borrowing(alpha, "copy", _form(
        title, "Jane Austen", "9780141439518", "P-1002", format="digital",
        title_of_component="Chapter 1", pages="1-12", copyright_agreed=True))
    bid = view["id"]
    say(f"{alpha.name} asks for a copy of '{title}', chapter 1 ({bid})")
    view, lending = await _until_with(demo, alpha, bid, gamma, "will_supply")
    lid = lending["id"]
    say(f"{gamma.name} will supply the copy ({lid})")
    url = f"https://gamma.example.org/copies/{lid}.pdf"
    await demo.act(gamma, "lending", lid, "deliver_copy", url=url)
    await demo.wait(gamma, "lending", lid, "COPY_COMPLETED")
    view = await demo.wait(alpha, "borrowing", bid, "copy_delivered")
    # ISO 18626 v1.2 has no URL element: the link travels in the note (sentVia URL).
    delivery = (view.get("state") or {}).get("delivery") or {}
    if url not in (delivery.get("url"), *(delivery.get("note") or "").split()):
        raise StepFailed(f"{alpha.name} does not show where the copy is ({url}): "
                         f"{delivery}\n{history_text(view)}")
    say(f"{gamma.name} delivered it ({url}): copy delivered {demo.out.ok}")


async def story_condition(demo: Demo, say: StoryLog) -> None:
    alpha, gamma = demo["alpha"], demo["gamma"]
    title = "The Great Gatsby"
    view = await demo.create_borrowing(alpha, "condition", _form(
        title, "F. Scott Fitzgerald", "9780743273565", "P-1003"))
    bid = view["id"]
    say(f"{alpha.name} asks for '{title}' ({bid})")
    view, lending = await _until_with(demo, alpha, bid, gamma, "will_supply")
    lid = lending["id"]
    say(f"{gamma.name} will supply ({lid})")
    await demo.act(gamma, "lending", lid, "add_conditions", conditions=["LibraryUseOnly"],
                   note="Special collections: for use in the library only")
    view = await demo.wait(alpha, "borrowing", bid, "conditional")
    offers = (view.get("state") or {}).get("conditions") or [{}]
    if "LibraryUseOnly" not in (offers[-1].get("loan_conditions") or []):
        raise StepFailed(f"{alpha.name} did not record the LibraryUseOnly condition: "
                         f"{offers[-1]}\n{history_text(view)}")
    say(f"{gamma.name} adds a condition: LibraryUseOnly; {alpha.name} must answer")
    await demo.act(alpha, "borrowing", bid, "condition_answer", accept=True)
    await demo.wait(gamma, "lending", lid,
                    lambda v: v.get("status") == "WILL_SUPPLY"
                    and (v.get("state") or {}).get("conditions_accepted") is True,
                    what="WILL_SUPPLY with the conditions accepted")
    say(f"{alpha.name} accepts the condition; {gamma.name} sees it accepted")
    await demo.act(gamma, "lending", lid, "ship", barcodes=["GAM-0003"])
    await demo.wait(gamma, "lending", lid, "SHIPPED")
    await demo.wait(alpha, "borrowing", bid, "shipped")
    say(f"{gamma.name} shipped it (library use only): shipped {demo.out.ok}")


async def story_cancel(demo: Demo, say: StoryLog) -> None:
    alpha, gamma = demo["alpha"], demo["gamma"]
    title = "Nineteen Eighty-Four"
    view = await demo.create_borrowing(alpha, "cancel", _form(
        title, "George Orwell", "9780451524935", "P-1004"))
    bid = view["id"]
    say(f"{alpha.name} asks for '{title}' ({bid})")
    view, lending = await _until_with(demo, alpha, bid, gamma, "will_supply")
    lid = lending["id"]
    say(f"{gamma.name} will supply ({lid})")
    await demo.act(alpha, "borrowing", bid, "cancel", reason="The patron no longer needs it")
    say(f"{alpha.name} cancels before it is shipped")
    await demo.wait(gamma, "lending", lid, "CANCELLED")
    await demo.wait(alpha, "borrowing", bid, "cancelled")
    say(f"{gamma.name} confirms the cancel: cancelled {demo.out.ok}")


async def story_closure(demo: Demo, say: StoryLog) -> None:
    alpha = demo["alpha"]
    start, end = demo.today, demo.today + timedelta(days=7)
    status, closure = await demo.api(alpha, "PUT", "/api/borrowing/closure", json={
        "active": True, "start": start.isoformat(), "end": end.isoformat(),
        "note": "Stocktaking"})
    if status != 200 or not closure.get("in_effect"):
        raise StepFailed(f"{alpha.name} could not close borrowing: HTTP {status}: "
                         f"{_error_text(closure)}")
    say(f"{alpha.name} closes borrowing: {closure.get('description')}")
    title = "To Kill a Mockingbird"
    try:
        view = await demo.create_borrowing(alpha, "closure", _form(
            title, "Harper Lee", "9780060935467", "P-1005"))
    except StepFailed:
        record = demo.requests[-1]
        refusal = record.refused or ""
        if not refusal.startswith("HTTP 409"):
            raise
        if start.isoformat() not in refusal or end.isoformat() not in refusal:
            raise StepFailed(f"the refusal does not give the closure dates "
                             f"({start} to {end}): {refusal}") from None
        say(f"a new request for '{title}' is refused: {refusal} {demo.out.ok}")
    else:
        raise StepFailed(f"{alpha.name} accepted a new request ({view['id']}) while "
                         "closed for borrowing")
    finally:
        status, _ = await demo.api(alpha, "PUT", "/api/borrowing/closure",
                                   json={"active": False})
    if status == 200:
        say(f"{alpha.name} reopens borrowing")


DEFAULT_STORIES: tuple[Story, ...] = (
    Story("loan", "a loan through a rota whose first lender is closed", story_loan),
    Story("copy", "a copy delivered electronically", story_copy),
    Story("condition", "a loan condition accepted", story_condition),
    Story("cancel", "a request cancelled before shipping", story_cancel),
    Story("closure", "a borrowing closure refusing a new request", story_closure),
)


def _name(demo: Demo, symbol: str) -> str:
    lib = demo.lender_by_symbol(symbol)
    return lib.name if lib is not None else symbol


# -- setting up --------------------------------------------------------------------------------


def prepare_directory(directory: Path) -> Path:
    """Recreate ``directory`` -- only if it is empty or one a previous demo made."""
    directory = directory.expanduser().resolve()
    if directory.exists():
        if not directory.is_dir():
            raise DemoSetupError(f"{directory} exists and is not a directory")
        if any(directory.iterdir()) and not (directory / MARKER).exists():
            raise DemoSetupError(
                f"{directory} is not empty and was not made by `ill-node demo`: "
                "not deleting it; choose another --dir")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by `ill-node demo`; recreated on each run\n")
    return directory


_PG_NAME = re.compile(r"[A-Za-z0-9_]*")


def postgres_databases(prefix: str, keys: Iterable[str]) -> dict[str, str]:
    """``postgresql://user@host/illdemo`` -> {key: ``postgresql://user@host/illdemo_<key>``}."""
    parts = urlsplit(prefix)
    base = parts.path.lstrip("/") or "ill_demo"
    if not _PG_NAME.fullmatch(base):
        raise DemoSetupError(f"--db: database name prefix {base!r} may only have letters, "
                             "digits and _")
    base = base.rstrip("_")
    scheme = "postgresql"
    return {key: urlunsplit((scheme, parts.netloc, f"/{base}_{key}", parts.query, ""))
            for key in keys}


async def recreate_postgres(urls: Iterable[str]) -> None:
    import asyncpg

    for url in urls:
        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        admin = urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))
        try:
            conn = await asyncpg.connect(admin, timeout=5)
        except Exception as exc:  # noqa: BLE001 - refused, auth, unknown host...
            raise DemoSetupError(f"cannot reach PostgreSQL at {db.safe_url(admin)}: {exc}"
                                 ) from None
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()


def config_text(lib: Library, others: Sequence[Library], *, lending_closure: tuple[date, date]
                | None) -> str:
    """The library's configuration: the starter config, with its partners (the
    others, in rota order), the demo's database, closure and outbox settings."""
    text = default_config_text(
        symbol=lib.symbol, name=lib.spec.full_name, listen=f"127.0.0.1:{lib.port}",
        public_url=lib.endpoint,
        partners=[{"symbol": o.symbol, "name": o.spec.full_name, "url": o.endpoint}
                  for o in others],
    )
    if lib.database is not None:
        text = _replace_once(
            text, re.compile(r"^# database = .*$", re.MULTILINE),
            f'database = "{lib.database}"  # made by `ill-node demo --db`')
    if lending_closure is not None:
        start, end = lending_closure
        text = _replace_once(
            text, re.compile(r"^(\[lending\.closure\][^\n]*\n)active = false\n(?:# (?:start|end) = [^\n]*\n)*",
                             re.MULTILINE),
            r"\g<1>active = true  # the demo: closed for lending around today"
            f"\nstart = {start.isoformat()}\nend = {end.isoformat()}"
            '\nnote = "Closed for the holidays"\n')
    return text + OUTBOX_SECTION


def _replace_once(text: str, pattern: re.Pattern[str], replacement: str) -> str:
    new, count = pattern.subn(replacement, text, count=1)
    if count != 1:
        raise DemoSetupError(f"the starter configuration has no line matching "
                             f"{pattern.pattern!r}: the demo needs updating")
    return new


async def load_holdings(lib: Library) -> int:
    text = resources.files("node.demo_data").joinpath(lib.spec.holdings).read_text("utf-8")
    (lib.directory / "holdings.csv").write_text(text, encoding="utf-8")
    report = holdings.parse_csv(text)
    if report.problems or not report.records:
        raise DemoSetupError(f"sample holdings {lib.spec.holdings}: {report.problems}")
    engine = db.create_engine(lib.config.node.database_url)
    try:
        async with engine.begin() as conn:
            await holdings_repo.import_records(conn, report.records, replace=True,
                                               now=datetime.now(UTC))
    finally:
        await engine.dispose()
    return report.item_count


async def start_library(lib: Library, *, timer_interval: float) -> None:
    lib.node = Node(lib.config, timer_interval_seconds=timer_interval)
    app = create_app(lib.config, node=lib.node)
    lib.runner = web.AppRunner(app, access_log=None)
    try:
        await lib.runner.setup()  # starts the node (engine, outbox, scheduler)
    except BaseException:
        # A node that failed half-way through starting: release what it opened.
        with contextlib.suppress(Exception):
            await lib.node.stop()
        lib.runner = None
        raise
    await web.TCPSite(lib.runner, "127.0.0.1", lib.port).start()


async def stop_library(lib: Library) -> None:
    if lib.runner is not None:
        with contextlib.suppress(Exception):
            await lib.runner.cleanup()
        lib.runner = None


# -- the final table ----------------------------------------------------------------------------


async def request_rows(demo: Demo) -> list[list[list[str]]]:
    """One row per request: cells of lines (a lender per line in the path columns)."""
    rows = []
    for record in demo.requests:
        if record.public_id is None:
            rows.append([[record.story], ["(none)"], [record.title],
                         [f"none: {record.borrower.name} refused to create it",
                          _short(record.refused or "")],
                         ["not created"], ["-"]])
            continue
        try:
            view = await demo.view(record.borrower, "borrowing", record.public_id)
        except (StepFailed, aiohttp.ClientError) as exc:
            rows.append([[record.story], [record.public_id], [record.title],
                         [f"cannot read it: {exc}"], ["?"], ["?"]])
            continue
        path, lender_states = [], []
        for n, entry in enumerate(rota_entries(view), 1):
            symbol = str(entry.get("symbol"))
            lender = demo.lender_by_symbol(symbol)
            name = lender.name if lender else symbol
            said = str(entry.get("state"))
            note = _short(str(entry.get("note") or ""))
            path.append(f"{n}. {name}: {said}" + (f" ({note})" if note else ""))
            rari = entry.get("attempt_request_id")
            if lender is None or not rari:
                lender_states.append(f"{name}: not asked")
                continue
            try:
                lending = await demo.lending_for(lender, rari, timeout=0.5)
                lender_states.append(f"{name} {lending['id']}: {lending['status']}")
            except StepFailed:
                lender_states.append(f"{name}: no request")
        rows.append([[record.story], [record.public_id], [record.title], path or ["-"],
                     [str(view.get("status"))], lender_states or ["-"]])
    return rows


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_table(header: list[str], rows: list[list[list[str]]]) -> list[str]:
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max([widths[i], *(len(line) for line in cell)])

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    for row in rows:
        height = max(len(cell) for cell in row)
        for k in range(height):
            out.append(line([cell[k] if k < len(cell) else "" for cell in row]))
    return out


# -- the runner --------------------------------------------------------------------------------


async def run_demo(
    directory: Path | str = Path("demo-data"),
    *,
    keep_running: bool = False,
    database: str = "sqlite",
    stories: Sequence[Story] | None = None,
    timeout: float = 10.0,
    out: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the demo; return the exit code (0: every story ended as it should).

    ``database``: ``"sqlite"`` (files in ``directory``) or a PostgreSQL URL
    whose database name is a prefix (``postgresql://user@host/illdemo`` makes
    ``illdemo_alpha``, ``illdemo_beta``, ``illdemo_gamma``, recreated).
    ``stories``: the stories to run (default :data:`DEFAULT_STORIES`).
    ``timeout``: seconds a step waits for a state.  ``keep_running``: leave
    the nodes up until Ctrl-C (or until ``stop`` is set).
    """
    printer = Printer(out)
    stories = DEFAULT_STORIES if stories is None else tuple(stories)
    started = time.monotonic()
    try:
        if database != "sqlite" and not database.startswith(
                ("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise DemoSetupError(f"--db must be sqlite or a postgresql:// URL, not {database!r}")
        directory = prepare_directory(Path(directory))
    except (DemoSetupError, OSError) as exc:
        printer(f"demo: {exc}")
        return 2

    today = datetime.now(UTC).date()
    lending_closure = (today - timedelta(days=3), today + timedelta(days=14))
    libraries: dict[str, Library] = {}
    for spec in LIBRARIES:
        libraries[spec.key] = Library(spec=spec, port=free_port(),
                                      directory=directory / spec.key, database=None)

    log_handler = _log_to(directory / "demo.log")
    http: aiohttp.ClientSession | None = None
    try:
        try:
            if database != "sqlite":
                urls = postgres_databases(database, libraries)
                await recreate_postgres(urls.values())
                for key, url in urls.items():
                    libraries[key].database = url
            printer(f"Starting three libraries on 127.0.0.1 (data in {directory}):")
            for lib in libraries.values():
                lib.directory.mkdir(parents=True)
                others = [o for o in libraries.values() if o is not lib]  # Beta, then Gamma
                lib.config_path.write_text(config_text(
                    lib, others,
                    lending_closure=lending_closure if lib.spec.key == "beta" else None,
                ), encoding="utf-8")
                lib.config = load(lib.config_path)
                await db.migrate_async(lib.config.node.database_url)
                items = await load_holdings(lib)
                await start_library(lib, timer_interval=1.0)
                role = {
                    "alpha": "borrows; rota: Beta, Gamma",
                    "beta": "closed for lending {} to {}".format(*lending_closure),
                    "gamma": "lends",
                }[lib.spec.key]
                printer(f"  {lib.name:<6} {lib.symbol:<14} {lib.url}  {items} items; {role}")
        except Exception as exc:  # noqa: BLE001 - setup: say what, stop cleanly
            printer(f"demo: could not start the libraries: {type(exc).__name__}: {exc}")
            return 2

        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        demo = Demo(libraries, http, printer, today=today, lending_closure=lending_closure,
                    timeout=timeout)
        results = []
        for story in stories:
            printer("")
            printer(f"[{story.key}] {story.title}")
            result = StoryResult(story=story)
            t0 = time.monotonic()
            try:
                await story.run(demo, StoryLog(demo, story))
                result.ok = True
            except StepFailed as exc:
                result.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a story must not stop the others
                result.error = f"{type(exc).__name__}: {exc}"
            result.seconds = time.monotonic() - t0
            if not result.ok:
                first, _, rest = (result.error or "").partition("\n")
                printer(f"[{story.key}] {printer.bad} FAILED: {first}")
                if rest:
                    for extra in rest.splitlines():
                        printer(extra)
            results.append(result)

        printer("")
        printer("Requests:")
        for text in format_table(
            ["Story", "Request", "Title", "Lenders tried: what each said",
             "Borrower (Alpha)", "Lender's side"],
            await request_rows(demo),
        ):
            printer("  " + text)

        printer("")
        printer("Stories:")
        for r in results:
            mark = printer.ok if r.ok else printer.bad
            printer(f"  {mark} {r.story.key:<10} {r.story.title} ({r.seconds:.1f} s)")
        failed = [r.story.key for r in results if not r.ok]
        printer("")
        printer(f"Data and configurations left in {directory}:")
        for lib in libraries.values():
            where = (db.safe_url(lib.database) if lib.database
                     else lib.config.node.database_url.split("///", 1)[-1])
            printer(f"  {lib.config_path}  (database: {where})")
        printer(f"  node log: {directory / 'demo.log'}")
        elapsed = time.monotonic() - started
        if failed:
            printer(f"{printer.bad} demo FAILED in {elapsed:.1f} s: {', '.join(failed)} "
                    "did not end as it should")
        else:
            printer(f"{printer.ok} all {len(results)} stories ended as they should "
                    f"({elapsed:.1f} s)")
        code = 1 if failed else 0

        if keep_running:
            await _keep_running(libraries, printer, stop)
        return code
    finally:
        if http is not None:
            await http.close()
        for lib in libraries.values():
            await stop_library(lib)
        _unlog(log_handler)


async def _keep_running(libraries: dict[str, Library], printer: Printer,
                        stop: asyncio.Event | None) -> None:
    alpha, gamma = libraries["alpha"], libraries["gamma"]
    printer("")
    printer("The nodes stay up until Ctrl-C:")
    for lib in libraries.values():
        printer(f"  {lib.name:<6} {lib.url}  (ISO 18626: {lib.endpoint})")
    printer("Try the staff API, e.g.:")
    printer(f"  curl -s {alpha.url}/api/borrowing/requests")
    printer(f"  curl -s {gamma.url}/api/lending/requests")
    printer(f"  curl -s -X POST {alpha.url}/api/borrowing/requests "
            "-H 'Content-Type: application/json' -d '{\"title\": \"Crime and Punishment\", "
            "\"isbn\": \"9780140449136\", \"patron_id\": \"P-2001\", "
            "\"pickup_location\": \"Alpha Main Desk\", \"format\": \"physical\"}'")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signals here: Ctrl-C still ends asyncio.run
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    printer("stopping the nodes")


def _log_to(path: Path) -> tuple[logging.Handler, logging.Logger, int]:
    """Send the nodes' log lines to a file in the demo directory while it runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("node")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler, logger, previous


def _unlog(state: tuple[logging.Handler, logging.Logger, int]) -> None:
    handler, logger, previous = state
    logger.removeHandler(handler)
    logger.setLevel(previous)
    handler.close()
