"""Staff search through the HTTP API of a real lending node (node/store/search.py):
the barcode of the item we shipped, title words, paging by cursor, a bad cursor."""

from __future__ import annotations

from tests.e2e.test_lending import KARAMAZOV, MOBY, net, start  # noqa: F401 - fixture


async def test_staff_find_a_loan_by_the_shipped_barcode_and_page_by_cursor(net):  # noqa: F811
    lender, borrower = await start(net)
    await borrower.request("loan-1", MOBY, title="Moby Dick; or, The Whale")
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    await borrower.request("loan-2", KARAMAZOV, title="The Brothers Karamazov")
    await lender.act("lending", lid, action="ship", by="anna", barcodes=["B-MOBY-1", "VOL-2"])

    for q in ("B-MOBY-1", "VOL-2", "loan-1", lid, "whale moby", "WHAL"):
        code, found = await lender.api("GET", f"/api/lending/requests?q={q}")
        assert code == 200 and [r["id"] for r in found["requests"]] == [lid], q
        assert found["total"] == 1 and found["total_exact"] and found["next"] is None
    code, found = await lender.api("GET", "/api/lending/requests?q=B-MOBY")
    assert found["requests"] == []

    code, first = await lender.api("GET", "/api/lending/requests?limit=1")
    assert code == 200 and first["total"] == 2 and first["next"]
    code, second = await lender.api("GET", f"/api/lending/requests?limit=1&cursor={first['next']}")
    assert code == 200 and second["next"] is None
    assert {first["requests"][0]["id"], second["requests"][0]["id"]} == {
        lid, (await lender.api("GET", "/api/lending/requests?q=loan-2"))[1]["requests"][0]["id"]}

    code, err = await lender.api("GET", "/api/lending/requests?cursor=not-ours")
    assert code == 400 and "is not one this server gave out" in err["error"]
