"""Delivered messages leave the outbox after ``[outbox] keep_sent_days``: at a hub the
outbox would otherwise keep a second copy of every message sent, for ever.  The
message log keeps them all, and the partners screen still says when each partner was
last reached."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from node import scheduler
from node.service import utcnow

KEEP_ONE_DAY = """
[outbox]
keep_sent_days = 1
"""


async def test_the_scheduler_deletes_old_deliveries(net, monkeypatch):
    monkeypatch.setattr(scheduler, "PRUNE_FIRST_AFTER", timedelta(seconds=0.2))
    monkeypatch.setattr(scheduler, "PRUNE_EVERY", timedelta(seconds=0.2))
    alpha = net.add("alpha", sections=KEEP_ONE_DAY, rota=["beta"])
    beta = net.add("beta")
    await net.start()
    ids = []
    for title in ("Moby Dick", "Walden"):  # beta holds neither: Unfilled, end of rota
        status, created = await alpha.api("POST", "/api/borrowing/requests", json={
            "title": title, "patron_id": "P1", "pickup_location": "MAIN"})
        assert status == 201, created
        ids.append(created["id"])
        await alpha.wait_for("borrowing", created["id"], "unfilled")
    sent = await _sent(alpha)
    assert [r["peer"] for r in sent] == [beta.symbol, beta.symbol]
    await asyncio.sleep(0.5)  # the job has run, and kept what is not a day old
    assert len(await _sent(alpha)) == 2

    alpha.node.clock = lambda: utcnow() + timedelta(days=2)
    for _ in range(100):
        if len(await _sent(alpha)) == 1:
            break
        await asyncio.sleep(0.05)
    [kept] = await _sent(alpha)
    assert kept["id"] == sent[0]["id"]  # the newest (listed newest first)

    # The first request still shows what was sent to beta; beta was last reached then.
    view = await alpha.request("borrowing", ids[0])
    assert [m["kind"] for m in view["messages"] if m["direction"] == "out"] == ["request"]
    assert [o["id"] for o in view["outbox"]] == []
    status, found = await alpha.api("GET", "/api/admin/partners")
    assert status == 200, found
    [partner] = [p for p in found["partners"] if p["symbol"] == beta.symbol]
    assert partner["delivery"]["last_success_at"] == kept["sent_at"]
    assert partner["delivery"]["outcome"] == "ok"


async def _sent(lib) -> list[dict]:
    status, found = await lib.api("GET", "/api/admin/outbox?state=sent")
    assert status == 200, found
    return found["outbox"]
