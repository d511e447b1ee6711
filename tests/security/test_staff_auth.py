"""Staff tokens and roles, patron tokens, the open local mode, the CLIs (issue 7)."""

from __future__ import annotations

import os
import stat

import aiohttp
import pytest

from node import staff_auth
from node.cli import main
from node.config import StaffRole, load
from tests.security.support import BOOK

TOKENS = {"ada": "ills_admin-token", "sam": "ills_staff-token", "rita": "ills_readonly-token"}
PATRON_SECRET = "a-patron-secret-of-some-length"


def staff_sections() -> str:
    roles = {"ada": "admin", "sam": "staff", "rita": "read-only"}
    return f'patron_secret = "{PATRON_SECRET}"\n' + "".join(
        f'\n[[staff]]\nname = "{name}"\nrole = "{roles[name]}"\n'
        f'token_sha256 = "{staff_auth.token_sha256(token)}"\n'
        for name, token in TOKENS.items())


async def call(lib, method, path, token=None, json=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, lib.url + path, json=json, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def lib(net):
    lib = net.add("alpha", sections=staff_sections())
    net.add_peer("ISIL:XX-PEER", "http://127.0.0.1:9/iso18626")  # a rota to send to
    lib.token = TOKENS["ada"]
    await net.start()
    return lib


async def test_roles(lib):
    closure = {"active": True, "note": "inventory"}
    assert (await call(lib, "PUT", "/api/lending/closure", json=closure))[0] == 401
    assert (await call(lib, "PUT", "/api/lending/closure", "ills_wrong", json=closure))[0] == 401
    assert (await call(lib, "PUT", "/api/lending/closure", TOKENS["sam"], json=closure))[0] == 403
    assert (await call(lib, "PUT", "/api/lending/closure", TOKENS["rita"], json=closure))[0] == 403
    assert (await call(lib, "POST", "/api/admin/reload", TOKENS["sam"]))[0] == 403
    assert (await call(lib, "GET", "/api/admin/outbox", TOKENS["rita"]))[0] == 403
    status, view = await call(lib, "PUT", "/api/lending/closure", TOKENS["ada"], json=closure)
    assert status == 200 and view["active"] is True
    assert (await call(lib, "GET", "/api/lending/closure", TOKENS["rita"]))[0] == 200
    assert (await call(lib, "GET", "/api/lending/requests"))[0] == 401

    # read-only may look, not act or create
    assert (await call(lib, "POST", "/api/borrowing/requests", TOKENS["rita"], json=BOOK))[0] == 403
    status, view = await call(lib, "POST", "/api/borrowing/requests", TOKENS["sam"], json=BOOK)
    assert status == 201, view
    rid = view["id"]
    assert (await call(lib, "GET", f"/api/borrowing/requests/{rid}", TOKENS["rita"]))[0] == 200
    status, _ = await call(lib, "POST", f"/api/borrowing/requests/{rid}/actions", TOKENS["rita"],
                           json={"action": "cancel"})
    assert status == 403
    # history names who did it (whatever the body claims)
    status, view = await call(lib, "POST", f"/api/borrowing/requests/{rid}/actions", TOKENS["sam"],
                              json={"action": "cancel", "reason": "duplicate",
                                    "actor": "staff:ada"})
    assert status == 200, view
    actors = {h.get("actor") for h in view["history"]}
    assert "staff:sam" in actors and "staff:ada" not in actors, view["history"]


async def test_patrons_reach_only_their_own(lib):
    mine = staff_auth.patron_token(PATRON_SECRET, "P-100")
    theirs = staff_auth.patron_token(PATRON_SECRET, "P-200")
    forged = staff_auth.patron_token("another-secret-entirely", "P-100")
    status, view = await call(lib, "POST", "/api/patron/requests", mine, json=BOOK)
    assert status == 201, view
    assert (await call(lib, "POST", "/api/patron/requests", theirs, json=BOOK))[0] == 403
    assert (await call(lib, "POST", "/api/patron/requests", forged, json=BOOK))[0] == 401
    status, found = await call(lib, "GET", "/api/patron/P-100/requests", mine)
    assert status == 200 and [r["id"] for r in found["requests"]] == [view["id"]]
    assert (await call(lib, "GET", "/api/patron/P-100/requests", theirs))[0] == 403
    assert (await call(lib, "GET", "/api/patron/P-100/requests", forged))[0] == 401
    # a patron token is no staff token
    assert (await call(lib, "GET", "/api/borrowing/requests", mine))[0] == 403
    assert (await call(lib, "GET", f"/api/borrowing/requests/{view['id']}", mine))[0] == 403
    # staff see patrons' requests
    assert (await call(lib, "GET", "/api/patron/P-100/requests", TOKENS["rita"]))[0] == 200
    assert (await call(lib, "GET", f"/api/borrowing/requests/{view['id']}", TOKENS["rita"]))[0] == 200


async def test_open_mode_without_accounts_is_local_only(net, monkeypatch):
    lib = net.add("alpha")
    await net.start()
    status, _ = await lib.api("GET", "/api/lending/requests")
    assert status == 200  # loopback: open, as before
    # The same request from another host is refused.
    monkeypatch.setattr(staff_auth, "_is_loopback", lambda remote: False)
    status, body = await lib.api("GET", "/api/lending/requests")
    assert status == 401 and "this host" in body["error"]


def test_role_table():
    assert staff_auth.least_role("PUT", "/api/{role}/closure") is StaffRole.ADMIN
    assert staff_auth.least_role("GET", "/api/{role}/closure") is StaffRole.READ_ONLY
    assert staff_auth.least_role("POST", "/api/{role}/requests/{id}/actions") is StaffRole.STAFF
    assert staff_auth.least_role("POST", "/api/admin/outbox/{id}/retry") is StaffRole.ADMIN
    assert staff_auth.least_role("GET", "/api/patron/{patron_id}/requests") == staff_auth.PATRON
    assert staff_auth.patron_of(PATRON_SECRET, "illp_garbage") is None
    assert staff_auth.patron_of(PATRON_SECRET, staff_auth.patron_token(PATRON_SECRET, "é/1")) == "é/1"


MINIMAL = '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'


def test_staff_cli(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL)
    path.chmod(0o600)
    assert main(["staff", "add", "ada", "--role", "admin", "--config", str(path)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[2]
    assert main(["staff", "add", "sam", "--role", "staff", "--config", str(path)]) == 0
    assert main(["staff", "add", "ADA", "--role", "staff", "--config", str(path)]) == 1
    capsys.readouterr()
    text = path.read_text()
    assert token not in text and staff_auth.token_sha256(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load(path)
    assert staff_auth.resolve(config, f"Bearer {token}").actor == "staff:ada"
    assert main(["staff", "list", "--config", str(path)]) == 0
    assert "ada\tadmin\ttoken set" in capsys.readouterr().out
    assert main(["staff", "remove", "ada", "--config", str(path)]) == 0
    config = load(path)
    assert [a.name for a in config.staff] == ["sam"]
    assert staff_auth.resolve(config, f"Bearer {token}") is None


def test_patron_token_cli(tmp_path, capsys, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL.replace('name = "Me"\n', 'name = "Me"\npatron_secret = "${PS}"\n'))
    monkeypatch.setenv("PS", PATRON_SECRET)
    assert main(["patron", "token", "P-1", "--config", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert staff_auth.patron_of(PATRON_SECRET, token) == "P-1"


def test_keys_generate(tmp_path, capsys):
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    private = tmp_path / "k" / "node.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "k" / "node.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 1  # no overwrite
    line = capsys.readouterr().out.strip().splitlines()[-1].strip()
    config_text = (MINIMAL + f'signing_key = "{private}"\n'
                   f'[[partners]]\nsymbol = "ISIL:P"\nurl = "http://p/iso18626"\n'
                   f'[partners.auth.incoming]\npublic_key = "{line}"\n'
                   f'[partners.auth.outgoing]\nsign = true\n')
    path = tmp_path / "c.toml"
    path.write_text(config_text)
    config = load(path)
    assert config.node.signing_key and len(config.partners[0].auth.incoming.public_key) == 32
    assert os.path.exists(private)
