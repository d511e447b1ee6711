"""``ill-node borrowing``: the borrowing desk on the command line, on both databases.

The CLI works on the database through the service object; the messages it
queues are sent by the running node's outbox (it polls), which the second
test shows with real nodes on loopback.
"""

from __future__ import annotations

import asyncio
import textwrap

from sqlalchemy import select

from node.cli import main
from node.store import db
from node.store import tables as t
from tests.e2e.test_borrowing import BOOK, HOLDINGS, lending_request, load_holdings
from tests.harness import Network, free_port


def write_config(tmp_path, db_url: str, extra: str = ""):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""
        [node]
        symbol = "ISIL:XX-US"
        name = "Us"
        database = "{db_url}"

        [borrowing]
        pickup_locations = ["MAIN"]

        [[partners]]
        symbol = "ISIL:XX-LEND"
        name = "Lender"
        url = "http://127.0.0.1:{free_port()}/iso18626"

        [[rotas]]
        name = "default"
        partners = ["ISIL:XX-LEND"]
        """) + extra)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def outbox_rows(db_url: str):
    async def fetch():
        engine = db.create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(select(t.outbox).order_by(t.outbox.c.id))).all()
        finally:
            await engine.dispose()

    return asyncio.run(fetch())


def test_borrowing_commands_offline(tmp_path, db_url, capsys):
    config = str(write_config(tmp_path, db_url))
    assert run(capsys, "migrate", "--config", config)[0] == 0

    # every field problem, one per line, exit 1
    code, out, err = run(capsys, "borrowing", "create", "--config", config,
                         "isbn=123", "pickup_location=ATTIC", "format=vinyl")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert {line.split(":")[0] for line in lines} == {
        "isbn", "pickup_location", "format", "patron_id"}, err
    code, out, err = run(capsys, "borrowing", "create", "--config", config, "title")
    assert code == 1 and err.strip().count("\n") == 0 and "FIELD=VALUE" in err

    # a request: the id is printed, the Request waits in the outbox for the node
    code, out, err = run(capsys, "borrowing", "create", "--config", config,
                         "title=The Brothers Karamazov", "isbn=9780140449242",
                         "patron_id=P-1", "pickup_location=main", "needed_by=2099-01-31")
    assert code == 0, err
    bid = out.strip()
    assert bid.startswith("B-") and "ISIL:XX-LEND" in err
    [row] = outbox_rows(db_url)
    assert row.kind == "request" and row.state == "pending" and row.peer == "ISIL:XX-LEND"

    code, out, err = run(capsys, "borrowing", "create", "--config", config,
                         "title=Brothers Karamazov", "isbn=0-14-044924-8",
                         "patron_id=P-1", "pickup_location=MAIN")
    assert code == 0 and f"possible duplicate of open request {bid}" in err

    code, out, err = run(capsys, "borrowing", "list", "--config", config, "--q", "karamazov")
    assert code == 0 and bid in out and "2 request(s)" in out
    code, out, err = run(capsys, "borrowing", "list", "--config", config, "--status", "on_loan")
    assert code == 0 and "0 request(s)" in out
    code, out, err = run(capsys, "borrowing", "show", "--config", config, bid)
    assert code == 0 and "ISIL:XX-LEND [active]" in out and "Request sent to" in out
    code, out, err = run(capsys, "borrowing", "show", "--config", config, "B-NOSUCH")
    assert code == 1 and "no borrowing request B-NOSUCH" in err and "Traceback" not in err

    # staff actions with typed fields
    code, out, err = run(capsys, "borrowing", "act", "--config", config, bid, "note",
                         "note=patron phoned", "--by", "anna")  # --by, as on the lending side
    assert code == 0 and f"{bid} sent" in out
    code, out, err = run(capsys, "borrowing", "show", "--config", config, bid)
    assert "staff:anna" in out
    code, out, err = run(capsys, "borrowing", "act", "--config", config, bid, "fly")
    assert code == 1 and "unknown action 'fly'" in err and err.count("\n") == 1
    code, out, err = run(capsys, "borrowing", "act", "--config", config, bid, "receive",
                         "barcodes=TMP-1,TMP-2")
    assert code == 1 and "cannot receive now" in err  # the lender has not answered
    code, out, err = run(capsys, "borrowing", "act", "--config", config, bid, "cancel",
                         "reason=found elsewhere", "notify_patron=perhaps")
    assert code == 1 and "notify_patron must be yes or no" in err
    code, out, err = run(capsys, "borrowing", "receive", "--config", config, "--lender-id",
                         "L-NOSUCH", "TMP-1")
    assert code == 1 and "L-NOSUCH" in err
    code, out, err = run(capsys, "borrowing", "return", "--config", config, "TMP-404")
    assert code == 1 and "TMP-404" in err
    code, out, err = run(capsys, "borrowing", "act", "--config", config, bid, "cancel",
                         "reason=found elsewhere", "notify_patron=yes")
    assert code == 0 and f"{bid} cancel_requested" in out
    assert [r.kind for r in outbox_rows(db_url)] == ["request", "request",
                                                     "requestingAgencyMessage"]

    # temporarily inactive for borrowing
    code, out, err = run(capsys, "borrowing", "closure", "--config", config)
    assert code == 0 and out.strip() == "borrowing: open for borrowing"
    code, out, err = run(capsys, "borrowing", "closure", "--config", config, "--on",
                         "--start", "2020-01-01", "--end", "2099-12-31", "--note", "inventory")
    assert code == 0 and "Borrowing suspended 2020-01-01 to 2099-12-31 (inventory)" in out
    code, out, err = run(capsys, "borrowing", "create", "--config", config, "title=X",
                         "patron_id=P-2", "pickup_location=MAIN")
    assert code == 1 and "2099-12-31" in err and "suspended" in err
    code, out, err = run(capsys, "borrowing", "closure", "--config", config, "--on",
                         "--start", "2099-12-31", "--end", "2099-01-01")
    assert code == 1 and "is before --start" in err
    code, out, err = run(capsys, "borrowing", "closure", "--config", config, "--on",
                         "--start", "soon")
    assert code == 1 and "--start must be a date" in err
    code, out, err = run(capsys, "borrowing", "closure", "--config", config, "--off")
    assert code == 0 and out.strip() == "borrowing: open for borrowing"

    # a broken configuration: its problems, exit 1, no traceback
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nsymbol = 3\n")
    code, out, err = run(capsys, "borrowing", "list", "--config", str(bad))
    assert code == 1 and "Traceback" not in err and err


def test_unmigrated_database_is_one_line(tmp_path, capsys):
    config = str(write_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    code, out, err = run(capsys, "borrowing", "list", "--config", config)
    assert code == 1 and "migrate" in err and err.count("\n") == 1


async def test_cli_with_running_nodes(tmp_path, database_factory, capsys):
    """Offline commands, sent by the running node's outbox: a loan end to end."""
    net = Network(tmp_path, database_factory)
    borrower = net.add("borrower", sections="[borrowing]\npickup_locations = [\"MAIN\"]\n")
    lender = net.add("lender")
    await net.start()
    try:
        await load_holdings(lender, HOLDINGS)
        config = str(borrower.directory / "config.toml")

        async def cli(*argv):
            return await asyncio.to_thread(run, capsys, "borrowing", argv[0], "--config", config,
                                           *argv[1:])

        fields = [f"{k}={v}" for k, v in BOOK.items()]
        code, out, err = await cli("create", *fields)
        assert code == 0, err
        bid = out.strip()
        view = await borrower.wait_for("borrowing", bid, "will_supply")
        lid = (await lending_request(lender, view))["id"]
        await lender.act("lending", lid, action="ship", barcodes=["LEND-B1"])
        await borrower.wait_for("borrowing", bid, "shipped")

        code, out, err = await cli("receive", "--lender-id", lid, "TMP-9")
        assert code == 0 and f"{bid} on_hold: received TMP-9" in out, err
        code, out, err = await cli("act", bid, "loan_to_patron")
        assert code == 0 and "on_loan" in out, err
        code, out, err = await cli("return", "TMP-9")
        assert code == 0, err
        assert f"the item's destination is {lender.symbol} (lender)" in out
        await lender.wait_for("lending", lid, "RETURN_SHIPPED")  # sent by the node's outbox
        await lender.act("lending", lid, action="check_in")
        await borrower.wait_for("borrowing", bid, "complete")
        code, out, err = await cli("show", bid)
        assert code == 0 and "complete" in out and "loan complete" in out
    finally:
        await net.stop()
