"""The auth parts of the configuration (issue 7)."""

from __future__ import annotations

import pytest

from node.config import ConfigError, load, loads, security_warnings
from node.config_cli import check_config

BASE = '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'
PARTNER = '[[partners]]\nsymbol = "ISIL:XX-P"\nurl = "http://p/iso18626"\n'


def problems_of(text, env=None):
    with pytest.raises(ConfigError) as info:
        loads(text, env=env or {})
    return [(p.key, p.line, p.message) for p in info.value.problems]


def test_secrets_from_the_environment():
    text = BASE + PARTNER + ('[partners.auth.incoming]\nheader_name = "X-K"\n'
                             'header_value = "${P_SECRET}"\n')
    config = loads(text, env={"P_SECRET": "from-env"})
    assert config.partners[0].auth.incoming.header_value == "from-env"
    assert config.inline_secrets == ()
    assert problems_of(text) == [("partners[0].auth.incoming.header_value", 9,
                                  "environment variable P_SECRET is not set")]


def test_auth_problems_have_lines():
    text = BASE + PARTNER + (
        '[partners.auth.incoming]\nheader_name = "Bad Header"\npublic_key = "AAAA"\n'
        'client_cert_sha256 = "xyz"\nsecret = "x"\n'
        '[partners.auth.outgoing]\nheader_value = "v"\nsign = true\n')
    found = problems_of(text)
    keys = [(k, line) for k, line, _ in found]
    assert keys == [
        ("partners[0].auth.incoming.header_name", 8),  # not a header name
        ("partners[0].auth.incoming.header_name", 8),  # and no header_value
        ("partners[0].auth.incoming.public_key", 9),
        ("partners[0].auth.incoming.client_cert_sha256", 10),
        ("partners[0].auth.incoming.secret", 11),
        ("partners[0].auth.outgoing.header_value", 13),
        ("partners[0].auth.outgoing.sign", 14),
    ], found


def test_world_readable_config_with_secrets_warns(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(BASE + PARTNER + '[partners.auth.outgoing]\nheader_name = "X-K"\n'
                    'header_value = "literal-secret"\n')
    path.chmod(0o644)
    warnings = security_warnings(load(path))
    assert any("world-readable" in w and "header_value" in w for w in warnings)
    assert all("literal-secret" not in w for w in warnings)

    class Args:
        file = str(path)
        on = None

    assert check_config(Args) == 0
    assert "world-readable" in capsys.readouterr().err
    path.chmod(0o600)
    assert not any("world-readable" in w for w in security_warnings(load(path)))
