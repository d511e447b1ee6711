"""Holdings import (CLI) and the lookups auto-locate runs, on both databases."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from node.cli import main
from node.protocol.codes import Code
from node.protocol.messages import BibliographicRecordId
from node.store import db, holdings_repo
from node.supplier.locate import identifiers_of
from tests import builders

CSV = textwrap.dedent("""\
    record_id,title,author,isbn,oclc,barcode,call_number,location,status
    r1,The Brothers Karamazov,"Dostoyevsky, Fyodor",0-14-044924-8,(OCoLC)ocm12345,B1,PG3326 .B7,MAIN,available
    r1,The Brothers Karamazov,"Dostoyevsky, Fyodor",0-14-044924-8,,B2,PG3326 .B7,STACKS,on loan
    r2,Moby Dick,"Melville, Herman",,,B3,PS2384,REF,available
    r3,Bad row,,,,B4,,MAIN,sunbathing
    """)


def write_config(tmp_path, db_url):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""
        [node]
        symbol = "ISIL:XX-US"
        name = "Us"
        database = "{db_url.replace('+aiosqlite', '').replace('+asyncpg', '')}"
        """))
    return path


def request(**kw):
    return builders.request("ISIL:XX-THEM", "ISIL:XX-US", "r", **kw).message


def test_import_reports_bad_rows_and_lookups_find_records(tmp_path, db_url, capsys):
    config = write_config(tmp_path, db_url)
    assert main(["migrate", "--config", str(config)]) == 0
    data = tmp_path / "holdings.csv"
    data.write_text(CSV)
    assert main(["holdings", "import", str(data), "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "imported 2 records with 3 items" in out
    assert "line 5" in err and "sunbathing" in err

    async def lookups():
        engine = db.create_engine(db_url)
        try:
            async with engine.connect() as conn:
                # ISBN-13 in the request, ISBN-10 in the file
                by_isbn = await holdings_repo.candidates(
                    conn, identifiers_of(request(title="Karamazov Brothers", isbn="9780140449242")))
                by_title = await holdings_repo.candidates(
                    conn, identifiers_of(request(title="Moby-Dick", author="Herman Melville")))
                oclc = request(title="x", bibliographic_record_id=(
                    BibliographicRecordId(identifier="12345", code=Code("OCLC")),))
                by_oclc = await holdings_repo.candidates(conn, identifiers_of(oclc))
                nothing = await holdings_repo.candidates(
                    conn, identifiers_of(request(title="Unheld book")))
                return by_isbn, by_title, by_oclc, nothing, await holdings_repo.count(conn)
        finally:
            await engine.dispose()

    by_isbn, by_title, by_oclc, nothing, counts = asyncio.run(lookups())
    assert [r.record_id for r in by_isbn] == ["r1"]
    assert {i.barcode: i.status for i in by_isbn[0].items} == {"B1": "available", "B2": "on_loan"}
    assert [r.record_id for r in by_title] == ["r2"]
    assert [r.record_id for r in by_oclc] == ["r1"]
    assert nothing == []
    assert counts == {"records": 2, "items": 3}

    async def count():
        engine = db.create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return await holdings_repo.count(conn)
        finally:
            await engine.dispose()

    # --replace: the file is the whole catalogue now; but one that would remove more than
    # --max-remove (20 % by default) of the records is refused, changing nothing, as a
    # broken or partial export would be
    data.write_text("record_id,title,barcode\nr9,Only book,B9\n")
    capsys.readouterr()
    assert main(["holdings", "import", str(data), "--config", str(config), "--replace"]) == 1
    err = capsys.readouterr().err
    assert "not imported, nothing changed: it would remove 2 of the 2 records stored (100 %)," \
        " more than 20 %. If the file is the whole catalogue, run again with --max-remove 100" \
        in err, err
    assert asyncio.run(count()) == {"records": 2, "items": 3}
    assert main(["holdings", "import", str(data), "--config", str(config), "--replace",
                 "--max-remove", "100"]) == 0
    assert "1 new or changed, 0 unchanged, 2 removed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["holdings", "import", str(data), "--config", str(config), "--max-remove", "150"])
    assert "'150' is not a percentage from 0 to 100" in capsys.readouterr().err

    assert asyncio.run(count()) == {"records": 1, "items": 1}


def test_import_analyses_the_holdings_tables_on_postgresql(tmp_path, db_url):
    """A freshly loaded table has no statistics until autovacuum comes by; the import
    gathers them itself on PostgreSQL, and leaves SQLite without statistics."""
    config = write_config(tmp_path, db_url)
    assert main(["migrate", "--config", str(config)]) == 0
    data = tmp_path / "holdings.csv"
    data.write_text(CSV)
    assert main(["holdings", "import", str(data), "--config", str(config)]) == 0

    async def statistics():
        engine = db.create_engine(db_url)
        try:
            async with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    return (await conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")).all()
                return (await conn.exec_driver_sql(
                    "SELECT relname, analyze_count > 0, last_analyze IS NOT NULL"
                    " FROM pg_stat_user_tables WHERE relname LIKE 'holdings_%'"
                    " ORDER BY relname")).all()
        finally:
            await engine.dispose()

    expected = [] if db_url.startswith("sqlite") else [
        (name, True, True) for name in ("holdings_identifiers", "holdings_items",
                                     "holdings_records")]
    assert [tuple(row) for row in asyncio.run(statistics())] == expected
