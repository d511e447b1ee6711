"""``ill-node lending ...`` on both databases: the staff workflows without HTTP."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, date, datetime, timedelta

import pytest

from node.cli import main
from node.config import load
from node.protocol import writer
from node.service import Node
from node.store import db, holdings_repo
from node.supplier.holdings import parse_csv
from tests import builders

PEER = "ISIL:XX-BORROWER"
US = "ISIL:XX-LENDER"

HOLDINGS = textwrap.dedent("""\
    record_id,title,author,isbn,barcode,call_number,location,status
    r1,Moby Dick,"Melville, Herman",9780142437247,B-1,PS2384 .M6,STACKS,available
    r2,Atlas <of> Everything,,9780140449136,B-2,G1021,MAIN,available
    """)


@pytest.fixture
def config(tmp_path, db_url):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""
        [node]
        symbol = "{US}"
        name = "Lender"
        database = "{db_url.replace('+aiosqlite', '').replace('+asyncpg', '')}"

        [[partners]]
        symbol = "{PEER}"
        name = "Borrower"
        url = "http://127.0.0.1:9/iso18626"
        """))
    assert main(["migrate", "--config", str(path)]) == 0
    return path


def run(coro):
    return asyncio.run(coro)


async def _with_node(config, fn, *, offset=timedelta()):
    cfg = load(config)
    node = Node(cfg, clock=lambda: datetime.now(UTC) + offset)
    node.engine = db.create_engine(cfg.node.database_url)
    try:
        return await fn(node)
    finally:
        await node.engine.dispose()


def receive_requests(config, *raris_isbns):
    async def fn(node):
        async with node.engine.begin() as conn:
            await holdings_repo.import_records(conn, parse_csv(HOLDINGS).records, replace=True,
                                               now=node.clock())
        for rari, isbn, title in raris_isbns:
            await node.receive(writer.serialise(builders.request(PEER, US, rari, isbn=isbn,
                                                                 title=title)))
    run(_with_node(config, fn))


def tick_later(config, days: int):
    return run(_with_node(config, lambda node: node.run_due_timers(),
                          offset=timedelta(days=days)))


def cli(capsys, *argv, config) -> tuple[int, str, str]:
    code = main(["lending", *argv, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def lending_id(capsys, config, rari: str) -> str:
    code, out, _ = cli(capsys, "list", "--q", rari, config=config)
    assert code == 0
    [line] = [line for line in out.splitlines() if rari in line]
    return line.split()[1] if line.startswith("*") else line.split()[0]


def test_lending_cli_list_show_act_check_in_slip(config, capsys):
    receive_requests(config, ("r-1", "9780142437247", "Moby Dick"),
                     ("r-2", "9780140449136", "Atlas <of> Everything"))
    code, out, _ = cli(capsys, "list", config=config)
    assert code == 0 and "2 request(s)" in out and "WILL_SUPPLY 2" in out
    lid = lending_id(capsys, config, "r-1")
    other = lending_id(capsys, config, "r-2")

    code, out, _ = cli(capsys, "show", lid, config=config)
    assert code == 0
    assert "located: B-1 PS2384 .M6 STACKS" in out
    assert "received_request" in out and "sent_WillSupply" in out
    assert "<- ISIL:XX-BORROWER" in out and "-> ISIL:XX-BORROWER" in out

    code, out, _ = cli(capsys, "pull-slip", other, config=config)
    assert code == 0 and out.startswith("<!DOCTYPE html>")
    assert "Atlas &lt;of&gt; Everything" in out and "<of>" not in out
    assert out.count("<svg") == 2 and "B-2" in out
    code, out, err = cli(capsys, "pull-slips", config=config)
    assert code == 0 and out.count('class="slip"') == 2 and "2 slip(s)" in err

    due = (date.today() + timedelta(days=10)).isoformat()
    code, out, err = cli(capsys, "act", lid, "ship", "barcodes=B-1", f"due_date={due}",
                         "tracking=TRK-1", "--by", "anna", config=config)
    assert code == 0, err
    assert f"{lid}: SHIPPED" in out and "B-1" in out
    code, out, _ = cli(capsys, "list", "--barcode", "B-1", config=config)
    assert lid in out and "1 request(s)" in out
    code, out, _ = cli(capsys, "list", "--overdue", config=config)
    assert "0 request(s)" in out
    code, out, _ = cli(capsys, "show", lid, config=config)
    assert "staff:anna" in out and f"shipped: B-1, due {due}" in out

    assert tick_later(config, 12) == 1  # the timer job, 12 days on
    code, out, _ = cli(capsys, "list", "--overdue", config=config)
    assert lid in out and "OVERDUE" in out and "1 request(s)" in out

    code, out, err = cli(capsys, "check-in", "B-1", config=config)
    assert code == 0, err
    assert f"{lid}: LOAN_COMPLETED" in out
    code, out, err = cli(capsys, "check-in", "B-1", config=config)
    assert code == 1 and "LOAN_COMPLETED" in err
    one_line_error(err)
    code, out, err = cli(capsys, "check-in", "NO-SUCH", config=config)
    assert code == 1 and "NO-SUCH" in err
    one_line_error(err)

    code, out, err = cli(capsys, "act", other, "lost", config=config)
    assert code == 1 and "not allowed" in err
    one_line_error(err)
    code, out, err = cli(capsys, "act", other, "reject", "reason=NotOnShelf", "note=Gone",
                         config=config)
    assert code == 0 and "UNFILLED" in out, err


def test_lending_cli_bad_input_is_one_line(config, capsys, tmp_path):
    receive_requests(config, ("r-1", "9780142437247", "Moby Dick"))
    lid = lending_id(capsys, config, "r-1")
    for argv, expected in [
        (("act", lid, "fly"), "unknown action"),
        (("act", lid, "ship", "due_date=2026-13-45"), "not a date"),
        (("act", lid, "ship", "nonsense"), "key=value"),
        (("act", lid, "ship", "colour=blue"), "colour"),
        (("act", lid, "lost", "charge=45"), "amount:CURRENCY"),
        (("act", lid, "renew_answer", "approve=true"), "not allowed"),
        (("act", "L-NOPE", "ship"), "L-NOPE"),
        (("show", "L-NOPE"), "L-NOPE"),
        (("pull-slip", "L-NOPE"), "L-NOPE"),
        (("check-in", "  "), "barcode"),
        (("closure", "--start", "tomorrow"), "--start"),
        (("closure", "--on", "--start", "2030-01-10", "--end", "2030-01-01"), "before"),
    ]:
        code, out, err = cli(capsys, *argv, config=config)
        assert code == 1, (argv, out, err)
        assert expected in err, (argv, err)
        one_line_error(err)
    code = main(["lending", "list", "--config", str(tmp_path / "missing.toml")])
    _, err = capsys.readouterr()
    assert code == 1 and "missing.toml" in err and "Traceback" not in err


def test_lending_cli_closure(config, capsys):
    code, out, _ = cli(capsys, "closure", config=config)
    assert code == 0 and "open for lending" in out
    today = date.today()
    start, end = today.isoformat(), (today + timedelta(days=14)).isoformat()
    code, out, _ = cli(capsys, "closure", "--on", "--start", start, "--end", end,
                       "--note", "Inventory", config=config)
    assert code == 0
    assert f"in effect now: Lending suspended {start} to {end}" in out and "Inventory" in out

    # An incoming request is answered Unfilled with the dates.
    receive_requests(config, ("r-9", "9780142437247", "Moby Dick"))
    lid = lending_id(capsys, config, "r-9")
    code, out, _ = cli(capsys, "show", lid, config=config)
    assert "UNFILLED" in out and f"Lending suspended {start} to {end}" in out

    code, out, _ = cli(capsys, "closure", "--off", config=config)
    assert code == 0 and "open for lending" in out
    code, out, _ = cli(capsys, "closure", "--on", config=config)
    assert "until further notice" in out
