"""``ill-node staff add --sides``: an account limited to one side of the desk."""

from __future__ import annotations

import pytest

from node import staff_auth
from node.cli import main
from node.config import STAFF_SIDES, load

MINIMAL = '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'


def test_staff_add_writes_the_sides_the_account_may_act_on(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL)
    path.chmod(0o600)
    assert main(["staff", "add", "lena", "--role", "staff", "--sides", "lending", "lending",
                 "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "(acting on lending only)" in out[0]
    token = out[2]
    assert main(["staff", "add", "both", "--role", "staff", "--config", str(path)]) == 0
    capsys.readouterr()
    config = load(path)
    assert {a.name: a.sides for a in config.staff} == {"lena": ("lending",), "both": STAFF_SIDES}
    assert staff_auth.resolve(config, f"Bearer {token}").actor == "staff:lena"
    assert main(["staff", "list", "--config", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "lena\tstaff\ttoken set\tlending\n" in listed
    assert "both\tstaff\ttoken set\tlending, borrowing\n" in listed


def test_staff_add_refuses_an_unknown_side(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL)
    with pytest.raises(SystemExit) as exit_:
        main(["staff", "add", "x", "--role", "staff", "--sides", "lendng", "--config", str(path)])
    assert exit_.value.code == 2
    assert "invalid choice: 'lendng'" in capsys.readouterr().err
    assert path.read_text() == MINIMAL
