"""Who am I (``GET /api/whoami``), accounts limited to one side, the patrons' closure notice."""

from __future__ import annotations

import aiohttp
import pytest

from node import staff_auth
from node.config import ConfigError, StaffRole, loads
from tests.security.support import BOOK

SECRET = "a-patron-secret-of-some-length"
TOKENS = {"ada": "ills_admin-token", "lena": "ills_lending-token", "rita": "ills_readonly-token"}
ACCOUNTS = f'patron_secret = "{SECRET}"\n' + "".join(
    f'\n[[staff]]\nname = "{name}"\nrole = "{role}"\n{extra}\n'
    f'token_sha256 = "{staff_auth.token_sha256(TOKENS[name])}"\n'
    for name, role, extra in (("ada", "admin", ""), ("lena", "staff", 'sides = ["lending"]'),
                              ("rita", "read-only", "")))
MINIMAL = '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'


async def call(lib, method, path, token=None, json=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, lib.url + path, json=json, headers=headers) as resp:
            return resp.status, await resp.json()


def test_sides_in_the_configuration():
    config = loads(MINIMAL + '[[staff]]\nname = "a"\nrole = "staff"\nsides = ["Lending"]\n'
                   '[[staff]]\nname = "b"\nrole = "admin"\n')
    assert [(s.name, s.role, s.sides) for s in config.staff] == [
        ("a", StaffRole.STAFF, ("lending",)), ("b", StaffRole.ADMIN, ("lending", "borrowing"))]
    with pytest.raises(ConfigError) as info:
        loads(MINIMAL + '[[staff]]\nname = "a"\nrole = "staff"\nsides = ["loans"]\n'
              '[[staff]]\nname = "b"\nrole = "staff"\nsides = []\n')
    assert [(p.key, p.message) for p in info.value.problems] == [
        ("staff[0].sides[0]", "must be one of 'lending', 'borrowing' (got 'loans')"),
        ("staff[1].sides", 'must name at least one of "lending", "borrowing"')]


async def test_whoami_and_a_lending_only_account(net):
    lib = net.add("alpha", sections=ACCOUNTS)
    net.add_peer("ISIL:XX-PEER", "http://127.0.0.1:9/iso18626")  # a rota to send to
    await net.start()

    status, me = await call(lib, "GET", "/api/whoami", TOKENS["lena"])
    assert status == 200
    assert me == {"actor": "staff:lena", "name": "lena", "role": "staff", "patron_id": None,
                  "acts_on": ["lending"], "admin": False, "open": False}
    assert (await call(lib, "GET", "/api/whoami", TOKENS["rita"]))[1]["acts_on"] == []
    assert (await call(lib, "GET", "/api/whoami", TOKENS["ada"]))[1]["admin"] is True
    assert (await call(lib, "GET", "/api/whoami"))[0] == 401

    # lena reads borrowing but changes nothing there, by any route
    assert (await call(lib, "GET", "/api/borrowing/requests", TOKENS["lena"]))[0] == 200
    for method, path, body in (
            ("POST", "/api/borrowing/requests", BOOK),
            ("POST", "/api/borrowing/receive", {"request_id": "B-1", "barcodes": ["T"]}),
            ("POST", "/api/patron/requests", {**BOOK, "patron_id": "P-1"})):
        status, answer = await call(lib, method, path, TOKENS["lena"], json=body)
        assert status == 403 and "only on lending" in answer["error"], (path, answer)
    status, created = await call(lib, "POST", "/api/borrowing/requests", TOKENS["ada"], json=BOOK)
    assert status == 201, created
    status, _ = await call(lib, "POST", f"/api/borrowing/requests/{created['id']}/actions",
                           TOKENS["lena"], json={"action": "note", "note": "x"})
    assert status == 403
    # ... and acts on lending (an unknown barcode: the check-in's own answer, not a refusal)
    status, answer = await call(lib, "POST", "/api/lending/check-in", TOKENS["lena"],
                                json={"barcode": "NOPE"})
    assert status == 404, answer


async def test_patrons_read_the_closure_notice_only(net):
    lib = net.add("alpha", sections=ACCOUNTS)
    await net.start()
    patron = staff_auth.patron_token(SECRET, "P-7")
    status, me = await call(lib, "GET", "/api/whoami", patron)
    assert status == 200
    assert (me["role"], me["patron_id"], me["acts_on"]) == ("patron", "P-7", [])

    closure = {"active": True, "start": "2026-01-01", "end": "2099-01-01", "note": "Moving"}
    assert (await call(lib, "PUT", "/api/borrowing/closure", TOKENS["ada"], json=closure))[0] == 200
    status, notice = await call(lib, "GET", "/api/patron/closure", patron)
    assert status == 200
    assert (notice["in_effect"], notice["start"], notice["end"], notice["note"]) == (
        True, "2026-01-01", "2099-01-01", "Moving")
    assert (await call(lib, "GET", "/api/patron/closure", TOKENS["rita"]))[0] == 200
    assert (await call(lib, "GET", "/api/patron/closure"))[0] == 401
    # the staff closure routes stay staff-only
    assert (await call(lib, "GET", "/api/borrowing/closure", patron))[0] == 403
    assert (await call(lib, "PUT", "/api/borrowing/closure", patron, json=closure))[0] == 403
