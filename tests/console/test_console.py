"""The staff console and the patron page, driven in headless Chromium.

Two real nodes on loopback (tests/harness.py), on SQLite and on PostgreSQL
(``database_factory``), Debian's chromium at /usr/bin/chromium driven by Python
Playwright (never a downloaded browser).
Without chromium (or the playwright package) these tests are skipped, or
fail when ``CI`` is set.  Screenshots go to the test's tmp dir
(``<tmp_path>/shots``).
"""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from node.store import holdings_repo
from node.store import tables as t
from node.supplier.holdings import parse_csv
from tests.harness import Library, Network

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

HOLDINGS = textwrap.dedent("""\
    record_id,title,author,isbn,barcode,call_number,location,status
    r1,The Brothers Karamazov,"Dostoyevsky, Fyodor",0-14-044924-8,LEND-B1,PG3326,MAIN,available
    r2,Moby Dick,"Melville, Herman",9780142437247,LEND-M1,PS2384,MAIN,available
    r2,Moby Dick,"Melville, Herman",9780142437247,LEND-M2,PS2384,MAIN,available
    """)
BORROWING = """
[borrowing]
answer_timeout_hours = 48
pickup_locations = ["MAIN", "BRANCH"]
"""
WHALE = {"title": "Moby Dick", "author": "Melville, Herman", "isbn": "9780142437247",
         "patron_id": "P-200", "pickup_location": "MAIN"}

pytestmark = pytest.mark.timeout(90)


def _browser_problem() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    return None


@pytest.fixture
async def browser():
    problem = _browser_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def net(tmp_path, database_factory):
    network = Network(tmp_path, database_factory)
    network.add("borrower", sections=BORROWING)
    network.add("lender")
    await network.start()
    await load_holdings(network["lender"])
    yield network
    await quiesce_timers(network)
    await network.stop()


async def quiesce_timers(network: Network) -> None:
    """Pause the nodes' timer jobs and let a running one finish before the nodes stop.

    Node.stop() shuts APScheduler down without waiting, then disposes of the engine; a
    timer tick still running then (likely while a browser keeps the loop busy) can leave
    an aiosqlite close pending forever and hang the loop's teardown.
    """
    for lib in network.libraries.values():
        scheduler = getattr(lib.node, "_scheduler", None) if lib.node else None
        if scheduler is not None:
            scheduler.pause()
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline and any(
            getattr(t.get_coro(), "__name__", "") == "run_coroutine_job"
            for t in asyncio.all_tasks()):
        await asyncio.sleep(0.05)


async def load_holdings(lib: Library) -> None:
    async with lib.node.engine.begin() as conn:
        await holdings_repo.import_records(conn, parse_csv(HOLDINGS).records, replace=True,
                                           now=lib.node.clock())


class Console:
    """One browser page on one node, with screenshots and a check for script errors."""

    def __init__(self, page, lib: Library, shots: Path):
        self.page, self.lib, self.shots = page, lib, shots
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" and "Failed to load resource" not in msg.text else None)

    @classmethod
    async def open(cls, browser, lib: Library, shots: Path, *, width: int = 1280,
                   height: int = 900) -> Console:
        context = await browser.new_context(viewport={"width": width, "height": height})
        page = await context.new_page()
        page.set_default_timeout(10_000)
        return cls(page, lib, shots)

    async def goto(self, where: str) -> None:
        await self.page.goto(f"{self.lib.url}{where}")

    async def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def check_clean(self) -> None:
        assert not self.errors, "\n".join(self.errors)

    async def act(self, action: str, fill: dict[str, str] | None = None) -> None:
        """Open an action's short form on the request page, fill it, confirm it."""
        page = self.page
        await page.locator(f"button[data-action={action}]").first.click()
        form = page.locator(f"form[data-form={action}]")
        for selector, value in (fill or {}).items():
            await form.locator(selector).fill(value)
        await form.locator("button[type=submit]").click()


async def fetch_status(page, method: str, path: str, body: dict | None = None) -> int:
    """The HTTP status of an API call made by the page with its stored staff token."""
    return await page.evaluate("""async ([method, path, body]) => {
        const token = sessionStorage.getItem('ill.staffToken');
        const headers = {'Content-Type': 'application/json'};
        if (token) headers.Authorization = 'Bearer ' + token;
        const init = {method, headers};
        if (body !== null) init.body = JSON.stringify(body);
        return (await fetch(path, init)).status;
    }""", [method, path, body])


async def lending_id(lender: Library, rari: str, timeout: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        _code, found = await lender.api("GET", "/api/lending/requests")
        for r in found["requests"]:
            if r["requesting_request_id"] == rari:
                return r["id"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the lender has no request {rari}")


# -- borrowing: creation to completion ---------------------------------------------------------


async def test_borrowing_request_from_creation_to_completion(net, browser, tmp_path):
    from playwright.async_api import expect

    borrower, lender = net["borrower"], net["lender"]
    c = await Console.open(browser, borrower, tmp_path / "shots")
    page = c.page
    await c.goto("/console/")
    await expect(page.get_by_role("heading", name="Borrowing requests")).to_be_visible()
    await expect(page.get_by_text("No requests match.")).to_be_visible()

    # create in the console
    await page.get_by_role("link", name="New request").click()
    await page.locator("#f-title").fill("The Brothers Karamazov")
    await page.locator("#f-author").fill("Dostoyevsky, Fyodor")
    await page.locator("#f-isbn").fill("9780140449242")
    await page.locator("#f-patron_id").fill("P-100")
    # a wrong pickup location is refused field by field
    await page.locator("#f-pickup_location").fill("MOON")
    await page.get_by_role("button", name="Create request").click()
    await expect(page.locator("#f-pickup_location-error")).to_contain_text("not a pickup location")
    await expect(page.locator("#f-pickup_location")).to_have_attribute("aria-invalid", "true")
    await c.shot("01-create-form-error")
    await page.locator("#f-pickup_location").fill("MAIN")
    await page.get_by_role("button", name="Create request").click()
    await expect(page.get_by_role("heading", name="The Brothers Karamazov")).to_be_visible()
    bid = re.search(r"#/borrowing/r/([^?]+)", page.url).group(1)
    await c.shot("02-created")

    # the lender (auto-located, WillSupply) ships through its API
    view = await borrower.wait_for("borrowing", bid, {"sent", "will_supply"})
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = await lending_id(lender, view["requesting_request_id"])
    await lender.wait_for("lending", lid, "WILL_SUPPLY")
    await lender.act("lending", lid, action="ship", barcodes=["LEND-B1"])
    view = await borrower.wait_for("borrowing", bid, "shipped")

    # the request page shows the new status after Refresh; the rota tab shows the lender active
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator(".request-head .badge")).to_have_text("Shipped by partner")
    await page.get_by_role("tab", name=re.compile("Rota")).click()
    await expect(page.locator(".tabpanel")).to_contain_text(lender.symbol)
    await expect(page.locator(".tabpanel")).to_contain_text("Active")

    # receive at the desk: scan the lender's id, then the temporary barcode, Enter to finish
    await c.goto("/console/#/desk/receive")
    lookup = page.locator("#f-desk-lookup")
    await expect(lookup).to_be_focused()
    await lookup.fill(view["supplying_request_id"])
    await lookup.press("Enter")
    await expect(page.locator(".result")).to_contain_text(bid)
    scan = page.locator("#f-desk-barcode")
    await expect(scan).to_be_focused()
    await scan.fill("TMP-1")
    await scan.press("Enter")
    await expect(page.locator(".barcodes")).to_contain_text("TMP-1")
    await scan.press("Enter")  # empty field: receive
    await expect(page.locator(".result.ok")).to_contain_text("Received")
    await c.shot("03-desk-received")

    # loan to the patron from the request page
    await c.goto(f"/console/#/borrowing/r/{bid}")
    await c.act("loan_to_patron")
    await expect(page.locator(".result.ok")).to_contain_text("Loaned to patron")
    await page.get_by_role("tab", name=re.compile("Received items")).click()
    await expect(page.locator(".tabpanel")).to_contain_text("TMP-1")
    await c.shot("04-on-loan")
    await page.get_by_role("tab", name=re.compile("History")).click()
    await expect(page.locator(".tabpanel")).to_contain_text("loan")
    await page.get_by_role("tab", name=re.compile("Protocol log")).click()
    await expect(page.locator(".tabpanel")).to_contain_text("supplyingAgencyMessage")
    await page.locator("details.log summary").first.click()
    await expect(page.locator("details.log pre").first).to_contain_text("ISO18626Message")
    await c.shot("05-protocol-log")

    # return to the partner by scanning the temporary barcode
    await c.goto("/console/#/desk/return")
    scan = page.locator("#f-desk-barcode")
    await expect(scan).to_be_focused()
    await scan.fill("TMP-1")
    await scan.press("Enter")
    await expect(page.locator(".result.ok")).to_contain_text("Returned item to partner")
    await expect(page.locator(".result.ok")).to_contain_text("destination")
    await c.shot("06-desk-returned")

    # the lender checks in; the borrowing request completes
    await lender.wait_for("lending", lid, "RETURN_SHIPPED")
    await lender.act("lending", lid, action="check_in")
    await borrower.wait_for("borrowing", bid, "complete")
    await c.goto("/console/#/borrowing?status=complete")
    await expect(page.locator("table.queue")).to_contain_text(bid)
    await expect(page.locator("table.queue")).to_contain_text("Completed")
    await expect(page.locator(".facets")).to_contain_text("Completed (1)")
    await c.shot("07-queue-complete")

    # a narrow screen (a phone at the desk)
    narrow = await Console.open(browser, borrower, tmp_path / "shots", width=390, height=844)
    await narrow.goto(f"/console/#/borrowing/r/{bid}")
    await expect(narrow.page.locator(".request-head .badge")).to_have_text("Completed")
    await narrow.shot("08-narrow-request")
    c.check_clean()
    narrow.check_clean()


# -- lending: arrival to check-in ---------------------------------------------------------------


async def add_lending_requests(lib: Library, numbers, status: str = "WILL_SUPPLY",
                               next_timer_at: datetime | None = None) -> None:
    """Lending requests L-0001... straight into the table, each newer than the last."""
    start = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    async with lib.node.engine.begin() as conn:
        for n in numbers:
            when = start + timedelta(minutes=n)
            await conn.execute(insert(t.transactions).values(
                role="lending", public_id=f"L-{n:04d}", partner="ISIL:XX-P1",
                requesting_agency_id="isil:xx-p1", requesting_request_id=f"REQ-{n:04d}",
                status=status, title=f"Book {n}", created_at=when, updated_at=when,
                next_timer_at=next_timer_at, state={}))


async def test_the_lending_queue_lists_overdue_loans_only(net, browser, tmp_path):
    from playwright.async_api import expect

    lender = net["lender"]
    now = lender.node.clock()
    await add_lending_requests(lender, [1], "SHIPPED", now - timedelta(days=1))  # due, not run
    await add_lending_requests(lender, [2], "OVERDUE")
    await add_lending_requests(lender, [3], "SHIPPED", now + timedelta(days=9))
    await add_lending_requests(lender, [4])
    c = await Console.open(browser, lender, tmp_path / "shots")
    page = c.page
    ids = page.locator("table.queue tbody tr td:first-child a")
    await c.goto("/console/#/lending")
    await expect(ids).to_have_count(4)
    await page.get_by_label("Overdue only").check()
    await page.get_by_role("button", name="Search").click()
    await expect(ids).to_have_text(["L-0002", "L-0001"])
    await expect(page.get_by_label("Overdue only")).to_be_checked()
    await c.goto("/console/#/borrowing")
    await expect(page.get_by_role("heading", name="Borrowing requests")).to_be_visible()
    await expect(page.get_by_label("Overdue only")).to_have_count(0)  # a lending filter
    c.check_clean()


async def test_queue_pages_do_not_shift_when_requests_arrive(net, browser, tmp_path):
    """The console pages through the API's cursors: requests arriving while staff page
    through a queue neither repeat a row on the next page nor hide one."""
    from playwright.async_api import expect

    lender = net["lender"]
    await add_lending_requests(lender, range(1, 61))
    c = await Console.open(browser, lender, tmp_path / "shots")
    page = c.page
    first_ids = page.locator("table.queue tbody tr td:first-child a")
    pager = page.locator(".pager")
    await c.goto("/console/#/lending")
    await expect(pager).to_contain_text("1–25 of 60")
    await expect(first_ids.first).to_have_text("L-0060")
    await expect(pager.get_by_role("link", name="Previous")).to_have_count(0)

    await add_lending_requests(lender, range(61, 64))  # newer than all listed
    await pager.get_by_role("link", name="Next").click()
    await expect(pager).to_contain_text("26–50 of 63")
    await expect(first_ids.first).to_have_text("L-0035")  # right after L-0036
    await expect(first_ids.last).to_have_text("L-0011")
    await pager.get_by_role("link", name="Next").click()
    await expect(pager).to_contain_text("51–60 of 63")
    await expect(first_ids).to_have_count(10)
    await expect(first_ids.last).to_have_text("L-0001")
    await expect(pager.get_by_role("link", name="Next")).to_have_count(0)

    await pager.get_by_role("link", name="Previous").click()
    await expect(pager).to_contain_text("26–50 of 63")
    await expect(first_ids.first).to_have_text("L-0035")
    await pager.get_by_role("link", name="Previous").click()
    await expect(pager).to_contain_text("1–25 of 63")
    await expect(first_ids.first).to_have_text("L-0063")  # the first page shows the newest
    await expect(pager.get_by_role("link", name="Previous")).to_have_count(0)
    # A filter starts from the first page again.
    await pager.get_by_role("link", name="Next").click()
    await page.locator(".facets a[data-status=WILL_SUPPLY]").click()
    await expect(pager).to_contain_text("1–25 of 63")
    c.check_clean()


async def test_lending_request_from_arrival_to_check_in(net, browser, tmp_path):
    from playwright.async_api import expect

    borrower, lender = net["borrower"], net["lender"]
    code, created = await borrower.api("POST", "/api/borrowing/requests", json=WHALE)
    assert code == 201, created
    bid = created["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = await lending_id(lender, view["requesting_request_id"])

    c = await Console.open(browser, lender, tmp_path / "shots")
    page = c.page
    await c.goto("/console/#/lending")
    await expect(page.get_by_role("heading", name="Lending requests")).to_be_visible()
    row = page.locator("table.queue tr", has_text=lid)
    await expect(row).to_have_class(re.compile("attention"))
    await expect(row).to_contain_text("Needs attention")
    await expect(row).to_contain_text("To pull and ship")
    await c.shot("L1-lending-queue")

    # filter by the facet, search, open the request
    await page.keyboard.press("/")  # jumps to the search box
    await expect(page.locator("#f-queue-q")).to_be_focused()
    await page.locator(".facets a[data-status=WILL_SUPPLY]").click()
    await expect(page.locator(".facets a[aria-current=true]")).to_contain_text("To pull and ship")
    await page.locator("#f-queue-q").fill("moby")
    await page.locator("#f-queue-q").press("Enter")
    await expect(page.locator("table.queue tbody tr")).to_have_count(1)
    await page.get_by_role("link", name=lid).click()
    await expect(page.get_by_role("heading", name="Moby Dick")).to_be_visible()
    # keyboard: the arrow keys move along the tabs, the focus stays on them
    await page.locator("#tab-general").focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.locator("#tab-history")).to_be_focused()
    await expect(page.locator("#tab-history")).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("ArrowLeft")
    await expect(page.locator("#tab-general")).to_be_focused()

    # the pull slip opens as a printable page
    async with page.context.expect_page() as slip_info:
        await page.get_by_role("button", name="Pull slip").click()
    slip = await slip_info.value
    await slip.wait_for_load_state()
    assert "Moby Dick" in await slip.content()
    await slip.close()

    # an internal note, then a wrong action shows the error plainly
    await page.get_by_role("tab", name=re.compile("Notes")).click()
    await page.locator("#f-tab-note-text").fill("Pulled from MAIN, copy 2 is in better shape")
    await page.locator("form[data-form=note] button[type=submit]").click()
    await expect(page.locator(".result.ok")).to_contain_text("Note added")
    await expect(page.locator(".tabpanel")).to_contain_text("copy 2 is in better shape")
    await page.locator("details.more summary").click()
    await c.act("check_in")
    await expect(page.locator(".result.error")).to_contain_text("Error")
    await c.shot("L2-action-error")

    # ship the second copy
    await c.act("ship", {"[name=barcodes]": "LEND-M2", "[name=tracking]": "TRK-42"})
    await expect(page.locator(".result.ok")).to_contain_text("Status now: Shipped")
    await c.shot("L3-shipped")

    # the borrower receives and sends it back (API)
    await borrower.wait_for("borrowing", bid, "shipped")
    await borrower.act("borrowing", bid, action="receive", barcodes=["TMP-W"])
    await borrower.act("borrowing", bid, action="return_to_partner")
    await lender.wait_for("lending", lid, "RETURN_SHIPPED")

    # check in at the desk by scanning the item barcode; an unknown one is refused plainly
    await c.goto("/console/#/desk/checkin")
    scan = page.locator("#f-desk-barcode")
    await expect(scan).to_be_focused()
    await scan.fill("NOPE-1")
    await scan.press("Enter")
    await expect(page.locator(".result.error")).to_contain_text("NOPE-1")
    await expect(scan).to_be_focused()
    await scan.fill("LEND-M2")
    await scan.press("Enter")
    await expect(page.locator(".result.ok")).to_contain_text("Completed")
    await expect(page.locator(".scan-log li")).to_have_count(2)
    await c.shot("L4-checked-in")
    await borrower.wait_for("borrowing", bid, "complete")
    c.check_clean()


# -- closures: admin screen, banner, the patron page refuses -------------------------------------


async def test_patron_page_and_borrowing_closure(net, browser, tmp_path):
    from playwright.async_api import expect

    borrower = net["borrower"]
    patron = await Console.open(browser, borrower, tmp_path / "shots", width=414, height=900)
    p = patron.page
    openurl = ("/patron/?url_ver=Z39.88-2004&rft_val_fmt=info%3Aofi%2Ffmt%3Akev%3Amtx%3Abook"
               "&rft.genre=book&rft.btitle=Moby+Dick&rft.aulast=Melville&rft.aufirst=Herman"
               "&rft.isbn=9780142437247&rft_id=info%3Aoclcnum%2F12345")
    await patron.goto(openurl)
    await expect(p.locator("#f-p-title")).to_have_value("Moby Dick")
    await expect(p.locator("#f-p-author")).to_have_value("Melville, Herman")
    await expect(p.locator("#f-p-isbn")).to_have_value("9780142437247")
    await expect(p.locator("#f-p-oclc")).to_have_value("12345")
    await expect(p.locator("#f-p-format")).to_have_value("physical")
    await p.locator("#f-who-patron_id").fill("P-300")
    await p.locator("#f-who-patron_id").press("Enter")
    await p.locator("#f-p-pickup_location").fill("BRANCH")
    await p.get_by_role("button", name="Send request").click()
    await expect(p.locator("#patron-form .result.ok")).to_contain_text("Thank you")
    await expect(p.locator("#mine table")).to_contain_text("Moby Dick")
    await patron.shot("P1-patron-request-sent")

    # an article link pre-fills a copy request
    await patron.goto("/patron/?genre=article&atitle=On+Whales&title=Journal+of+Cetology"
                      "&issn=1234-5679&spage=3&epage=9&rft.au=Ahab")
    await expect(p.locator("#f-p-format")).to_have_value("digital")
    await expect(p.locator("#f-p-title_of_component")).to_have_value("On Whales")
    await expect(p.locator("#f-p-pages")).to_have_value("3-9")

    # staff close borrowing in the admin screen: the banner shows across the console
    staff = await Console.open(browser, borrower, tmp_path / "shots")
    s = staff.page
    await staff.goto("/console/#/admin")
    card = s.locator("form[data-closure=borrowing]")
    today = borrower.node.clock().date()
    start, end = today.isoformat(), (today + timedelta(days=10)).isoformat()
    await card.locator("#f-borrowing-active").check()
    await card.locator("#f-borrowing-start").fill(start)
    await card.locator("#f-borrowing-end").fill(end)
    await card.locator("#f-borrowing-note").fill("Inventory week")
    await card.get_by_role("button", name="Save").click()
    await expect(card.locator(".result.ok")).to_contain_text("Saved")
    await expect(s.locator("#banner")).to_be_visible()
    await expect(s.locator("#banner")).to_contain_text("Closed for borrowing")
    await expect(s.locator("#outbox")).to_contain_text("Outbox")
    # what auto-locate has to go on: nothing here, the lender's three items there
    await expect(s.locator("#holdings")).to_contain_text("No holdings loaded")
    await staff.shot("P2-admin-closure")
    lending_staff = await Console.open(browser, net["lender"], tmp_path / "shots")
    await lending_staff.goto("/console/#/admin")
    await expect(lending_staff.page.locator("#holdings")).to_contain_text(
        "2 records, 3 items (3 available); last changed")
    lending_staff.check_clean()
    await staff.goto("/console/#/borrowing")
    await expect(s.locator("#banner")).to_contain_text("Closed for borrowing")

    # the patron page replaces the form with a notice giving the dates
    await patron.goto(openurl)
    notice = p.locator("#closed-notice")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text(start)
    await expect(notice).to_contain_text(end)
    await expect(notice).to_contain_text("Inventory week")
    await expect(p.locator("#patron-form")).to_have_count(0)
    await patron.shot("P3-patron-closed")
    # and the node itself refuses a request sent anyway
    status = await p.evaluate("""async () => (await fetch('/api/patron/requests', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({title: 'X',
        patron_id: 'P-300', pickup_location: 'MAIN'})})).status""")
    assert status == 409

    # reopening lifts the banner
    await staff.goto("/console/#/admin")
    await card.locator("#f-borrowing-active").uncheck()
    await card.get_by_role("button", name="Save").click()
    await expect(card.locator(".result.ok")).to_contain_text("Saved")
    await expect(s.locator("#banner")).to_be_hidden()
    patron.check_clean()
    staff.check_clean()


async def test_console_files_are_served_with_a_strict_policy(tmp_path):
    # static files only: one node, on SQLite
    network = Network(tmp_path, lambda name: f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}")
    lib = network.add("borrower")
    await network.start()
    try:
        await check_static_files(lib)
    finally:
        await quiesce_timers(network)
        await network.stop()


async def check_static_files(lib: Library) -> None:
    for path, kind in (("/console/", "text/html"), ("/console/app.js", "text/javascript"),
                       ("/console/app.css", "text/css"), ("/patron/", "text/html"),
                       ("/patron/patron.js", "text/javascript")):
        async with lib.http.get(lib.url + path) as resp:
            assert resp.status == 200, path
            assert resp.content_type == kind, path
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/console/../config.toml", "/console/.hidden.js", "/console/nothere.js",
                 "/console/console_routes.py"):
        async with lib.http.get(lib.url + path) as resp:
            assert resp.status == 404, path
    async with lib.http.get(lib.url + "/console", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/console/"


# -- staff accounts: sign in with a token, roles ------------------------------------------------


async def test_sign_in_with_staff_tokens(tmp_path, browser, database_factory):
    from playwright.async_api import expect

    from node.staff_auth import token_sha256

    admin_token, reader_token = "ills_admin-token-for-tests", "ills_reader-token-for-tests"
    network = Network(tmp_path, database_factory)
    lib = network.add("desk", sections=BORROWING + f"""
[[staff]]
name = "anna"
role = "admin"
token_sha256 = "{token_sha256(admin_token)}"

[[staff]]
name = "rob"
role = "read-only"
token_sha256 = "{token_sha256(reader_token)}"
""")
    await network.start()
    try:
        c = await Console.open(browser, lib, tmp_path / "shots")
        page = c.page
        await c.goto("/console/")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        token = page.locator("#f-token")
        await expect(token).to_be_focused()
        await token.fill("ills_wrong")
        await token.press("Enter")
        await expect(page.locator(".result.error")).to_contain_text("401")

        # read-only: the queues, but no Administration; the node refuses a closure anyway
        await token.fill(reader_token)
        await token.press("Enter")
        await expect(page.get_by_role("heading", name="Borrowing requests")).to_be_visible()
        await expect(page.locator("#whoami")).to_contain_text("rob (read-only)")
        await expect(page.locator('#nav [data-section="admin"]')).to_be_hidden()
        await c.goto("/console/#/admin")
        await expect(page.locator("main")).to_contain_text("Administration needs the admin role")
        await expect(page.locator("#f-lending-active")).to_have_count(0)
        assert await fetch_status(page, "PUT", "/api/lending/closure", {"active": True}) == 403

        # sign out, sign in as admin: the token goes as a Bearer header, Administration shows
        await page.get_by_role("button", name="Sign out").click()
        await page.locator("#f-token").fill(admin_token)
        await page.locator("#f-token").press("Enter")
        await expect(page.get_by_role("heading", name="Borrowing requests")).to_be_visible()
        await expect(page.locator('#nav [data-section="admin"]')).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('ill.staffToken')") == admin_token
        await c.goto("/console/#/admin")
        await page.locator("#f-lending-active").check()
        await page.locator("form[data-closure=lending]").get_by_role("button", name="Save").click()
        await expect(page.locator("form[data-closure=lending] .result.ok")).to_contain_text("Saved")
        await expect(page.locator("#banner")).to_contain_text("Closed for lending")
        await c.shot("T1-admin-signed-in")
        c.errors = [e for e in c.errors if "401" not in e and "403" not in e]
        c.check_clean()
    finally:
        await quiesce_timers(network)
        await network.stop()


# -- who am I: the console offers only what the account may do ------------------------------------

ADMIN_TOKEN, READER_TOKEN, LENDER_STAFF_TOKEN = (
    "ills_admin-token-for-tests", "ills_reader-token-for-tests", "ills_lena-token-for-tests")


def staff_accounts() -> str:
    from node.staff_auth import token_sha256

    return "".join(f"""
[[staff]]
name = "{name}"
role = "{role}"
token_sha256 = "{token_sha256(token)}"
{extra}
""" for name, role, token, extra in (
        ("anna", "admin", ADMIN_TOKEN, ""), ("rob", "read-only", READER_TOKEN, ""),
        ("lena", "staff", LENDER_STAFF_TOKEN, 'sides = ["lending"]')))


async def sign_in(c: Console, token: str) -> None:
    from playwright.async_api import expect

    await c.goto("/console/#/signin")
    await c.page.locator("#f-token").fill(token)
    await c.page.locator("#f-token").press("Enter")
    await expect(c.page.get_by_role("heading", name="Borrowing requests")).to_be_visible()


async def test_whoami_and_what_each_account_is_offered(tmp_path, browser, database_factory):
    from playwright.async_api import expect

    network = Network(tmp_path, database_factory)
    desk = network.add("desk", sections=BORROWING + staff_accounts())
    other = network.add("other", sections=BORROWING)
    desk.token = ADMIN_TOKEN
    await network.start()
    try:
        await load_holdings(desk)
        await load_holdings(other)
        # one request each way on the desk node: borrowing from other, lending to other
        code, borrowing = await desk.api("POST", "/api/borrowing/requests", json=WHALE)
        assert code == 201, borrowing
        code, asked = await other.api("POST", "/api/borrowing/requests",
                                      json={**WHALE, "patron_id": "P-9"})
        assert code == 201, asked
        view = await other.wait_for("borrowing", asked["id"], "will_supply")
        lid = await lending_id(desk, view["requesting_request_id"])

        for token, expected in (
                (ADMIN_TOKEN, {"name": "anna", "role": "admin", "admin": True,
                               "acts_on": ["lending", "borrowing"]}),
                (READER_TOKEN, {"name": "rob", "role": "read-only", "admin": False, "acts_on": []}),
                (LENDER_STAFF_TOKEN, {"name": "lena", "role": "staff", "admin": False,
                                      "acts_on": ["lending"]})):
            async with desk.http.get(desk.url + "/api/whoami",
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                assert (await resp.json()).items() >= expected.items()
        async with desk.http.get(desk.url + "/api/whoami") as resp:
            assert resp.status == 401

        borrowing_note, a_note = (f"/api/borrowing/requests/{borrowing['id']}/actions",
                                  {"action": "note", "note": "x"})
        # read-only: no actions, no desk, no administration, no new request; refused anyway
        c = await Console.open(browser, desk, tmp_path / "shots")
        page = c.page
        await sign_in(c, READER_TOKEN)
        await expect(page.locator("#whoami")).to_contain_text("rob")
        await expect(page.get_by_role("link", name="New request")).to_have_count(0)
        for section in ("desk", "admin"):
            await expect(page.locator(f'#nav [data-section="{section}"]')).to_be_hidden()
        await c.goto(f"/console/#/borrowing/r/{borrowing['id']}")
        await expect(page.locator("#no-actions")).to_contain_text("may read borrowing requests")
        await expect(page.locator("[data-action]")).to_have_count(0)
        await page.get_by_role("tab", name=re.compile("Notes")).click()
        await expect(page.locator(".tabpanel form")).to_have_count(0)
        await c.shot("W1-read-only-request")
        assert await fetch_status(page, "POST", borrowing_note, a_note) == 403

        # lending-only staff: acts on the lending request, only reads the borrowing one
        await page.get_by_role("button", name="Sign out").click()
        await sign_in(c, LENDER_STAFF_TOKEN)
        await expect(page.locator("#whoami")).to_contain_text("lena (staff, acts on lending)")
        await expect(page.locator('#nav [data-section="desk"]')).to_be_visible()
        await expect(page.locator('#nav [data-section="admin"]')).to_be_hidden()
        await expect(page.get_by_role("link", name="New request")).to_have_count(0)
        await c.goto(f"/console/#/borrowing/r/{borrowing['id']}")
        await expect(page.locator("#no-actions")).to_be_visible()
        await expect(page.locator("[data-action]")).to_have_count(0)
        await c.goto(f"/console/#/lending/r/{lid}")
        await expect(page.locator("button[data-action=ship]")).to_be_visible()
        await expect(page.locator("#no-actions")).to_have_count(0)
        await c.goto("/console/#/desk/receive")  # a borrowing desk: sent to the lending one
        await expect(page.get_by_role("heading", name="Check in lent items")).to_be_visible()
        await expect(page.locator(".subnav a")).to_have_count(1)
        await c.shot("W2-lending-only-desk")
        assert await fetch_status(page, "POST", borrowing_note, a_note) == 403
        assert await fetch_status(page, "POST", "/api/borrowing/requests", WHALE) == 403
        assert await fetch_status(page, "POST", f"/api/lending/requests/{lid}/actions",
                                  {"action": "note", "text": "pulled"}) == 200
        c.errors = [e for e in c.errors if "403" not in e]
        c.check_clean()
    finally:
        await quiesce_timers(network)
        await network.stop()


# -- partners and their reachability; the outbox's retry now ---------------------------------------


async def test_admin_sees_partners_reachability_and_retries_the_outbox(
        tmp_path, browser, database_factory):
    from tests.harness import free_port

    network = Network(tmp_path, database_factory)
    network.add("borrower", sections=BORROWING)
    network.add("lender")
    # a partner nobody answers for: nothing listens on its port
    network.add_peer("ISIL:XX-GONE", f"http://127.0.0.1:{free_port()}/iso18626")
    await network.start()
    try:
        await load_holdings(network["lender"])
        await partners_and_outbox(network, browser, tmp_path)
    finally:
        await quiesce_timers(network)
        await network.stop()


async def partners_and_outbox(net: Network, browser, tmp_path: Path) -> None:
    from playwright.async_api import expect

    borrower, lender = net["borrower"], net["lender"]

    code, created = await borrower.api("POST", "/api/borrowing/requests", json=WHALE)
    assert code == 201, created
    await borrower.wait_for("borrowing", created["id"], "will_supply")
    code, stuck = await borrower.api("POST", "/api/borrowing/requests",
                                     json={**WHALE, "partners": ["ISIL:XX-GONE"]})
    assert code == 201, stuck
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        code, found = await borrower.api("GET", "/api/admin/partners")
        assert code == 200, found
        by_symbol = {p["symbol"]: p for p in found["partners"]}
        gone = by_symbol["ISIL:XX-GONE"]["delivery"]
        if gone and gone["last_error"]:
            break
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.05)
    ours = by_symbol[lender.symbol]
    assert (ours["url"], ours["iso18626_version"], ours["lend_to"], ours["borrow_from"]) == (
        lender.endpoint, "1.2", True, True)
    assert ours["delivery"]["outcome"] == "ok" and ours["delivery"]["last_success_at"]
    assert ours["delivery"]["pending"] == 0
    assert gone["outcome"] == "failing" and gone["pending"] == 1
    assert gone["last_success_at"] is None
    code, answer = await borrower.api("POST", "/api/admin/partners/ISIL:XX-NOPE/check")
    assert code == 404 and "ISIL:XX-NOPE" in answer["error"]

    c = await Console.open(browser, borrower, tmp_path / "shots")
    page = c.page
    await c.goto("/console/#/admin")
    partners = page.locator("#partners")
    row_ok = partners.locator("tr", has_text=lender.symbol)
    row_gone = partners.locator("tr", has_text="ISIL:XX-GONE")
    await expect(row_ok).to_contain_text("Delivered")
    await expect(row_ok).to_contain_text(lender.endpoint)
    await expect(row_gone).to_have_class(re.compile("attention"))
    await expect(row_gone).to_contain_text("Failing")
    await expect(row_gone).to_contain_text("1 pending")
    await row_ok.get_by_role("button", name=f"Check now ({lender.symbol})").click()
    await expect(row_ok.locator(".check-result")).to_contain_text("Reachable (HTTP 405")
    await row_gone.get_by_role("button", name="Check now (ISIL:XX-GONE)").click()
    await expect(row_gone.locator(".check-result")).to_contain_text("Unreachable")
    await c.shot("A1-partners-reachability")

    # the stuck message shows in the outbox, and "Retry now" queues it at once
    outbox = page.locator("#outbox")
    await outbox.locator("#f-outbox-state").select_option("pending")
    await outbox.get_by_role("button", name="Show").click()
    stuck_row = outbox.locator("tr", has_text="ISIL:XX-GONE").first
    await expect(stuck_row).to_contain_text("pending")
    await stuck_row.get_by_role("button", name="Retry now").click()
    await expect(outbox.locator(".result.ok")).to_contain_text("will be sent again now")
    await c.shot("A2-outbox-retry")
    c.check_clean()


# -- the patron page with patron tokens: renewal of their own loan, the closure notice ------------

PATRON_SECRET = "patron-secret-for-tests-0123456789"


async def test_patron_requests_renewal_and_reads_the_closure(tmp_path, browser, database_factory):
    from playwright.async_api import expect

    from node.staff_auth import patron_token

    network = Network(tmp_path, database_factory)
    desk = network.add("desk", sections=f'patron_secret = "{PATRON_SECRET}"\n' + BORROWING
                       + staff_accounts())
    lender = network.add("lender")
    desk.token = ADMIN_TOKEN
    await network.start()
    try:
        await load_holdings(lender)
        code, created = await desk.api("POST", "/api/borrowing/requests",
                                       json={**WHALE, "patron_id": "P-500"})
        assert code == 201, created
        bid = created["id"]
        view = await desk.wait_for("borrowing", bid, "will_supply")
        lid = await lending_id(lender, view["requesting_request_id"])
        await lender.wait_for("lending", lid, "WILL_SUPPLY")
        await lender.act("lending", lid, action="ship", barcodes=["LEND-M1"])
        await desk.wait_for("borrowing", bid, "shipped")
        await desk.act("borrowing", bid, action="receive", barcodes=["TMP-P"])
        await desk.act("borrowing", bid, action="loan_to_patron")
        due = (await desk.request("borrowing", bid))["state"]["due_date"]

        patron = await Console.open(browser, desk, tmp_path / "shots", width=414, height=900)
        p = patron.page
        await patron.goto("/patron/")
        # the node wants a patron token: the page asks for the access code
        code_field = p.locator("#f-who-token")
        await code_field.fill(patron_token(PATRON_SECRET, "P-500"))
        await code_field.press("Enter")
        await expect(p.locator("#f-who-patron_id")).to_have_value("P-500")
        row = p.locator("#mine tr", has_text=bid)
        await expect(row).to_contain_text("Loaned to patron")
        assert due
        await expect(row).to_contain_text(due[:10])  # when the patron is to bring it back
        await row.get_by_role("button", name="Request renewal").click()
        await expect(p.locator("#mine .result.ok")).to_contain_text("Renewal requested")
        await patron.shot("R1-patron-renewal")
        # the lender (auto-renewing) answers; the history names the patron as the one who asked
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            history = (await desk.request("borrowing", bid))["history"]
            if "renewed" in [e["event"] for e in history]:
                break
            assert asyncio.get_running_loop().time() < deadline, "the renewal was not answered"
            await asyncio.sleep(0.05)
        assert {"event": "renew_requested", "actor": "patron:P-500"}.items() <= next(
            e for e in history if e["event"] == "renew_requested").items(), history

        # another patron cannot renew it
        async with desk.http.post(
                f"{desk.url}/api/patron/P-500/requests/{bid}/renew", json={},
                headers={"Authorization": f"Bearer {patron_token(PATRON_SECRET, 'P-501')}"}
        ) as resp:
            assert resp.status == 403

        # borrowing closed: patrons read the notice (not the staff closure route)
        today = desk.node.clock().date()
        start, end = today.isoformat(), (today + timedelta(days=7)).isoformat()
        code, closure = await desk.api("PUT", "/api/borrowing/closure", json={
            "active": True, "start": start, "end": end, "note": "Moving the stacks"})
        assert code == 200 and closure["in_effect"], closure
        bearer = {"Authorization": f"Bearer {patron_token(PATRON_SECRET, 'P-500')}"}
        async with desk.http.get(f"{desk.url}/api/patron/closure", headers=bearer) as resp:
            assert resp.status == 200
            assert (await resp.json()).items() >= {"in_effect": True, "start": start,
                                                   "end": end}.items()
        async with desk.http.get(f"{desk.url}/api/borrowing/closure", headers=bearer) as resp:
            assert resp.status == 403
        async with desk.http.put(f"{desk.url}/api/borrowing/closure", headers=bearer,
                                 json={"active": False}) as resp:
            assert resp.status == 403

        await patron.goto("/patron/")
        notice = p.locator("#closed-notice")
        await expect(notice).to_contain_text(f"from {start} until {end}")
        await expect(notice).to_contain_text("Moving the stacks")
        await expect(p.locator("#patron-form")).to_have_count(0)
        await expect(p.locator("#mine")).to_contain_text(bid)
        await patron.shot("R2-patron-closed")
        async with desk.http.post(f"{desk.url}/api/patron/requests", headers=bearer, json={
                "title": "X", "patron_id": "P-500", "pickup_location": "MAIN"}) as resp:
            assert resp.status == 409
        patron.errors = [e for e in patron.errors if "401" not in e]
        patron.check_clean()
    finally:
        await quiesce_timers(network)
        await network.stop()
