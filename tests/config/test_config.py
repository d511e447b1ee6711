"""node.config: TOML -> NodeConfig, line-numbered problems, check-config."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import date
from pathlib import Path

import pytest

from node import cli
from node.config import (
    AgencySymbol,
    Closure,
    ConfigError,
    ConfigProblem,
    NodeConfig,
    RetryPolicy,
    StaffRole,
    default_config_text,
    load,
    loads,
)
from node.protocol.codes import ServiceType, Status, Version

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


@pytest.fixture(autouse=True)
def _example_secrets(monkeypatch):
    """config.example.toml takes its partner secrets from the environment."""
    monkeypatch.setenv("LEND2_SECRET", "their-secret")
    monkeypatch.setenv("LEND2_OUR_SECRET", "our-secret")
DATA = Path(__file__).resolve().parent / "data"

MINIMAL = """\
[node]
symbol = "ISIL:XX-ME"
name = "Me"
"""


def problems_of(text: str, **kw) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        loads(text, **kw)
    return info.value.problems


def as_tuples(problems: list[ConfigProblem]) -> list[tuple[str, int | None]]:
    return [(p.key, p.line) for p in problems]


# --------------------------------------------------------------------------
# The example file


def test_example_loads_with_documented_values():
    config = load(EXAMPLE)
    assert isinstance(config, NodeConfig)
    assert config.source_path == EXAMPLE
    node = config.node
    assert node.symbol == AgencySymbol(type="ISIL", value="XX-LEND1")
    assert str(node.symbol) == "ISIL:XX-LEND1"
    assert node.name == "Example Library"
    assert (node.listen_host, node.listen_port, node.listen) == (
        "127.0.0.1",
        8080,
        "127.0.0.1:8080",
    )
    assert node.public_url == "http://127.0.0.1:8080/iso18626"
    assert node.database_url == f"sqlite+aiosqlite:///{ROOT / 'ill.db'}"
    assert node.iso18626_version is Version.V1_2
    assert node.data_dir == ROOT

    assert config.limits.max_body_bytes == 1024 * 1024
    assert config.limits.max_xml_depth == 64
    assert config.limits.request_timeout_seconds == 30
    assert config.outbox.max_attempts == 20
    assert config.outbox.initial_backoff_seconds == 2.0
    assert config.outbox.max_backoff_seconds == 3600
    assert config.outbox.keep_sent_days == 90

    lending = config.lending
    assert lending.auto_answer is True
    assert lending.found_status is Status.WILL_SUPPLY
    assert lending.when_on_loan is Status.RETRY_POSSIBLE
    assert lending.loan_period_days == 28 and lending.renew_period_days == 28
    assert lending.location_preference == ("MAIN", "STACKS")
    assert lending.non_lendable_locations == ("REF",)
    assert lending.closure == Closure(
        active=False, start=date(2026, 12, 20), end=date(2027, 1, 5), note=""
    )

    borrowing = config.borrowing
    assert borrowing.answer_timeout_hours == 72
    assert borrowing.retry_policy is RetryPolicy.RETRY and borrowing.retry_policy == "retry"
    assert borrowing.auto_accept_costs is True
    assert borrowing.pickup_locations == ("MAIN",)
    assert borrowing.closure == Closure()

    p2, p3 = config.partners
    assert str(p2.symbol) == "ISIL:XX-LEND2" and p2.url == "http://127.0.0.1:8081/iso18626"
    assert p2.lend_to and p2.borrow_from and p2.closure_reply is Status.UNFILLED
    assert p2.auth.incoming.methods == ("header",) and p2.auth.outgoing.header_name == "X-ILL-Secret"
    assert p3.iso18626_version is Version.V2021_2
    assert p3.lend_to is False and p3.closure_reply is Status.RETRY_POSSIBLE

    (rota,) = config.rotas
    assert rota.name == "default"
    assert rota.service_types == (ServiceType.LOAN, ServiceType.COPY)
    assert rota.formats == ()
    assert [str(s) for s in rota.partners] == ["ISIL:XX-LEND2", "ISIL:XX-LEND3"]

    assert dict(config.holdings.csv_columns) == {} and dict(config.holdings.marc_mapping) == {}
    (staff,) = config.staff
    assert (staff.name, staff.role, staff.token_sha256) == ("admin", StaffRole.ADMIN, None)


def test_every_example_key_has_a_comment():
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), 1):
        stripped = line.strip()
        if "=" in stripped and not stripped.startswith("#"):
            assert "#" in stripped, f"line {number} is undocumented: {line}"


def test_config_is_frozen():
    config = load(EXAMPLE)
    with pytest.raises(AttributeError):
        config.node.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.partners[0].auth["x"] = "y"  # type: ignore[index]


def test_minimal_config_takes_defaults(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(MINIMAL)
    config = load(path)
    assert config.node.public_url == "http://127.0.0.1:8080/iso18626"
    assert config.node.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'ill.db'}"
    assert config.node.data_dir == tmp_path.resolve()
    assert config.partners == () and config.rotas == () and config.staff == ()
    assert config.lending.closure == Closure() and not config.lending.closure.applies_on(
        date.today()
    )


# --------------------------------------------------------------------------
# Lookups


def test_agency_symbol_parse_and_case_insensitive_equality():
    sym = AgencySymbol.parse(" ISIL:XX-1 ")
    assert (sym.type, sym.value, str(sym)) == ("ISIL", "XX-1", "ISIL:XX-1")
    assert sym == AgencySymbol.parse("isil:xx-1") and hash(sym) == hash(
        AgencySymbol.parse("isil:xx-1")
    )
    assert str(AgencySymbol.parse("DNUCNI:a:b")) == "DNUCNI:a:b"
    for bad in ("ISIL", ":X", "ISIL:", "IS IL:X", "ISIL:X Y", ""):
        with pytest.raises(ValueError):
            AgencySymbol.parse(bad)


def test_partner_lookup_is_case_insensitive():
    config = load(EXAMPLE)
    assert config.partner("isil:xx-lend2") is config.partners[0]
    assert config.partner(AgencySymbol.parse("ISIL:XX-LEND3")) is config.partners[1]
    assert config.partner("ISIL:XX-NOBODY") is None
    assert config.partner("garbage") is None
    assert dict(config.partners_by_symbol) == {str(p.symbol): p for p in config.partners}


def test_partner_lookup_follows_a_replaced_partner_list():
    # The lookups are built with the object: a configuration made from another
    # (dataclasses.replace) must not answer with the other's partners.
    config = load(EXAMPLE)
    fewer = dataclasses.replace(config, partners=config.partners[:1])
    assert fewer.partner("ISIL:XX-LEND3") is None and config.partner("ISIL:XX-LEND3")
    assert list(fewer.partners_by_symbol) == [str(config.partners[0].symbol)]


def test_rota_for_service_type_and_format():
    config = loads(
        MINIMAL
        + textwrap.dedent(
            """
            [[partners]]
            symbol = "ISIL:A"
            url = "http://a/iso18626"
            [[partners]]
            symbol = "ISIL:B"
            url = "http://b/iso18626"

            [[rotas]]
            name = "any loan"
            service_types = ["Loan"]
            partners = ["ISIL:A", "ISIL:B"]
            [[rotas]]
            name = "microfilm"
            service_types = ["Loan", "Copy"]
            formats = ["Microfilm"]
            partners = ["ISIL:B"]
            [[rotas]]
            name = "either"
            service_types = ["CopyOrLoan"]
            partners = ["isil:b"]
            """
        )
    )
    assert config.rota_for("Loan", None).name == "any loan"
    assert config.rota_for(ServiceType.LOAN, "book").name == "any loan"
    assert config.rota_for("loan", "microfilm").name == "microfilm"  # specific beats generic
    assert config.rota_for("Copy", "Microfilm").name == "microfilm"
    assert config.rota_for("Copy", None) is None
    assert config.rota_for("CopyOrLoan", None).name == "either"
    assert config.rota_for("Nonsense", None) is None
    # Rota members are the partners' own symbols, as configured.
    assert str(config.rotas[2].partners[0]) == "ISIL:B"


# --------------------------------------------------------------------------
# Closures


def test_closure_applies_on_range():
    closure = Closure(active=True, start=date(2026, 12, 20), end=date(2027, 1, 5))
    assert not closure.applies_on(date(2026, 12, 19))
    assert closure.applies_on(date(2026, 12, 20))
    assert closure.applies_on(date(2027, 1, 1))
    assert closure.applies_on(date(2027, 1, 5))
    assert not closure.applies_on(date(2027, 1, 6))
    assert closure.reopens() == date(2027, 1, 6)
    assert not Closure(active=False, start=date(2026, 12, 20)).applies_on(date(2027, 1, 1))


def test_closure_open_ended():
    forever = Closure(active=True)
    assert forever.applies_on(date(1999, 1, 1)) and forever.applies_on(date(2999, 1, 1))
    assert forever.reopens() is None
    from_then = Closure(active=True, start=date(2027, 1, 1))
    assert not from_then.applies_on(date(2026, 12, 31)) and from_then.applies_on(date(2030, 1, 1))
    until = Closure(active=True, end=date(2027, 1, 1))
    assert until.applies_on(date(2020, 1, 1)) and not until.applies_on(date(2027, 1, 2))
    assert until.reopens() == date(2027, 1, 2)


def test_closure_describe():
    s, e = date(2026, 12, 20), date(2027, 1, 5)
    assert Closure(active=True, start=s, end=e).describe("Lending") == (
        "Lending suspended 2026-12-20 to 2027-01-05"
    )
    assert Closure(active=True, end=e).describe("Lending") == "Lending suspended until 2027-01-05"
    assert Closure(active=True, start=s).describe("Borrowing") == (
        "Borrowing suspended from 2026-12-20 until further notice"
    )
    assert Closure(active=True).describe("Lending") == "Lending suspended until further notice"


def test_closure_dates_may_be_strings_but_not_datetimes():
    config = loads(MINIMAL + '[lending.closure]\nactive = true\nstart = "2026-12-20"\n')
    assert config.lending.closure.start == date(2026, 12, 20)
    problems = problems_of(MINIMAL + "[lending.closure]\nstart = 2026-12-20T10:00:00\n")
    assert as_tuples(problems) == [("lending.closure.start", 5)]
    assert "not a date-time" in problems[0].message


# --------------------------------------------------------------------------
# Database URLs


@pytest.mark.parametrize(
    "configured, expected",
    [
        (None, "sqlite+aiosqlite:///{dir}/ill.db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///{dir}/x.db"),
        ("sqlite:///sub/../y.db", "sqlite+aiosqlite:///{dir}/y.db"),
        ("sqlite:////var/lib/ill/ill.db", "sqlite+aiosqlite:////var/lib/ill/ill.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///{dir}/x.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql://ill@db.example.org/ill", "postgresql+asyncpg://ill@db.example.org/ill"),
        ("postgres://ill@localhost:5433/ill", "postgresql+asyncpg://ill@localhost:5433/ill"),
        ("postgresql+asyncpg://ill@h/ill", "postgresql+asyncpg://ill@h/ill"),
    ],
)
def test_database_url_mapping(tmp_path, configured, expected):
    text = MINIMAL + (f'database = "{configured}"\n' if configured else "")
    path = tmp_path / "conf" / "node.toml"
    path.parent.mkdir()
    path.write_text(text)
    config = load(path)
    assert config.node.database_url == expected.format(dir=path.parent.resolve())


def test_database_url_without_file_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert loads(MINIMAL).node.database_url == f"sqlite+aiosqlite:///{Path.cwd() / 'ill.db'}"


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "ill.db", "sqlite:x.db", "sqlite://relative.db"])
def test_bad_database_url(bad):
    (problem,) = problems_of(MINIMAL + f'database = "{bad}"\n')
    assert (problem.key, problem.line) == ("node.database", 4)


# --------------------------------------------------------------------------
# Problems


BAD_EXPECTED = [
    ("node.name", 3, "required key 'name' is missing"),
    ("node.symbol", 4, "must be an agency symbol TYPE:VALUE"),
    ("node.listen", 5, "must be host:port"),
    ("node.public_url", 6, "must be an http(s) URL"),
    ("node.iso18626_version", 7, "must be one of '1.2', '2021-2' (got '1.3')"),
    ("node.database", 8, "unsupported database URL scheme 'mysql'"),
    ("node.colour", 9, "unknown key 'colour'"),
    ("limits.max_body_bytes", 12, "must be an integer (got a string)"),
    ("lending.found_status", 15, "must be one of 'WillSupply', 'ExpectToSupply' (got 'Maybe')"),
    ("lending.loan_period_days", 16, "must be at least 1"),
    ("lending.closure.active", 19, "must be true or false"),
    ("lending.closure.end", 21, "end 2027-01-05 is before start 2027-01-10"),
    ("borrowing.retry_policy", 24, "must be one of 'retry', 'next' (got 'later')"),
    ("borrowing.pickup_locations[1]", 25, "must be a string (got an integer)"),
    ("partners[0].lend_too", 30, "unknown key 'lend_too' (did you mean 'lend_to'?)"),
    ("partners[1].symbol", 33, "duplicate partner symbol 'isil:xx-lend2' (also partners[0])"),
    ("partners[1].url", 34, "must be an http(s) URL"),
    ("partners[1].closure_reply", 36, "must be one of 'Unfilled', 'RetryPossible'"),
    ("partners[2].url", 38, "required key 'url' is missing"),
    ("partners[2].auth.user", 44, "unknown key 'user'"),
    ("partners[3].symbol", 46, "required key 'symbol' is missing"),
    ("rotas[0].service_types[1]", 52, "must be one of 'Copy', 'Loan', 'CopyOrLoan' (got 'Book')"),
    ("rotas[0].partners[1]", 55, "unknown partner 'ISIL:XX-NOBODY'"),
    ("rotas[0].partners[2]", 56, "partner 'ISIL:XX-LEND4' has borrow_from = false"),
    ("rotas[0].partners[3]", 57, "partner 'ISIL:XX-LEND2' is listed twice"),
    ("staff[0].role", 62, "must be one of 'admin', 'staff', 'read-only' (got 'god')"),
    ("staff[0].token_sha256", 63, "must be a SHA-256 digest"),
]


def test_all_problems_of_a_bad_file_reported_at_once():
    path = DATA / "bad.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    problems = info.value.problems
    assert as_tuples(problems) == [(key, line) for key, line, _ in BAD_EXPECTED]
    for problem, (_, _, message) in zip(problems, BAD_EXPECTED):
        assert message in problem.message
        assert problem.source == str(path)
        assert problem.path == problem.key
    assert str(problems[16]) == (
        f"{path}:34: partners[1].url: must be an http(s) URL (got 'not a url')"
    )
    assert str(info.value).splitlines() == [str(p) for p in problems]


def test_partner_with_our_own_symbol():
    text = MINIMAL + '[[partners]]\nsymbol = "isil:xx-me"\nurl = "http://x/iso18626"\n'
    (problem,) = problems_of(text)
    assert (problem.key, problem.line) == ("partners[0].symbol", 5)
    assert "our own symbol" in problem.message


def test_toml_syntax_error_is_one_problem_with_its_line():
    (problem,) = problems_of(MINIMAL + "[lending]\nauto_answer = \n", source_path="x.toml")
    assert problem.line == 5 and problem.key == ""
    assert problem.message.startswith("invalid TOML: ")
    assert "(at line" not in problem.message
    assert str(problem).startswith("x.toml:5: invalid TOML: ")


def test_missing_node_table_and_unknown_top_level_key():
    problems = problems_of('[nodes]\nsymbol = "ISIL:X"\n')
    assert as_tuples(problems) == [("nodes", 1), ("node", None)]
    assert problems[0].message == "unknown key 'nodes' (did you mean 'node'?)"
    assert "required table [node] is missing" in problems[1].message


def test_wrong_shapes():
    text = MINIMAL + textwrap.dedent(
        """\
        lending = 3
        partners = "ISIL:A"
        [outbox]
        initial_backoff_seconds = 10
        max_backoff_seconds = 5
        poll_seconds = -1
        """
    )
    problems = problems_of(text)
    assert as_tuples(problems) == [
        ("node.lending", 4),
        ("node.partners", 5),
        ("outbox.max_backoff_seconds", 8),
        ("outbox.poll_seconds", 9),
    ]
    # (lending/partners under [node] are unknown keys there.)
    text = 'lending = 3\npartners = "x"\n' + MINIMAL
    problems = problems_of(text)
    assert [(p.key, p.line, p.message) for p in problems] == [
        ("lending", 1, "must be a table (got an integer)"),
        ("partners", 2, "must be an array of tables, written [[partners]]"),
    ]


def test_locator_handles_inline_tables_dotted_keys_and_multiline_strings():
    text = textwrap.dedent(
        '''\
        node = { symbol = "ISIL:XX-ME", name = """A
        multi-line "name" ""
        with quotes""", listen = "nowhere" }
        lending.closure.active = "no"
        lending."found_status" = 'Maybe'

        [[partners]]
        symbol = "ISIL:A"
        url = "http://a/iso18626"
        auth = { incoming = { header_name = "X-A", header_value = 5 } }
        [[partners]]
        symbol = "ISIL:B"
        url = 'mailto:b@example.org'
        '''
    )
    problems = problems_of(text)
    assert as_tuples(problems) == [
        ("node.listen", 3),
        ("lending.closure.active", 4),
        ("lending.found_status", 5),
        ("partners[0].auth.incoming.header_value", 10),
        ("partners[1].url", 13),
    ]


def test_version_and_listen_forms():
    config = loads(
        MINIMAL
        + 'listen = "[::1]:0"\niso18626_version = "2021-2"\n'
        + '[[partners]]\nsymbol = "ISIL:A"\nurl = "https://a.example.org:8443/iso"\n'
    )
    assert (config.node.listen_host, config.node.listen_port) == ("::1", 0)
    assert config.node.listen == "[::1]:0"
    assert config.node.public_url == "http://[::1]:0/iso18626"
    # A partner's version defaults to ours.
    assert config.partners[0].iso18626_version is Version.V2021_2
    assert config.partners[0].name == "ISIL:A"
    for bad in ("127.0.0.1:99999", "127.0.0.1", "[zz]:80", "a b:80", ":80"):
        (problem,) = problems_of(MINIMAL + f'listen = "{bad}"\n')
        assert (problem.key, problem.line) == ("node.listen", 4)


def test_processes_above_one_need_postgresql():
    assert loads(MINIMAL).node.processes == 1
    pg = 'database = "postgresql://ill@db.example.org/ill"\n'
    assert loads(MINIMAL + pg + "processes = 4\n").node.processes == 4
    for text, message in [
        ("processes = 2\n", '2 processes need a PostgreSQL database (SQLite serves one '
         'process): set database = "postgresql://..." or processes = 1'),
        (pg + "processes = 0\n", "must be at least 1 (got 0)"),
        (pg + "processes = 65\n", "must be at most 64 (got 65)"),
        (pg + 'processes = "2"\n', "must be an integer (got a string)"),
        (pg + 'listen = "127.0.0.1:0"\nprocesses = 2\n', "2 processes share one port: "
         "listen needs a port number, not 0 (any free port, a different one each)"),
    ]:
        (problem,) = problems_of(MINIMAL + text)
        assert (problem.key, problem.line, problem.message) == (
            "node.processes", 3 + text.count("\n"), message)


def test_keep_sent_days():
    assert loads(MINIMAL).outbox.keep_sent_days == 90
    assert loads(MINIMAL + "[outbox]\nkeep_sent_days = 0\n").outbox.keep_sent_days == 0
    (problem,) = problems_of(MINIMAL + "[outbox]\nkeep_sent_days = -1\n")
    assert (problem.key, problem.message) == ("outbox.keep_sent_days",
                                              "must be at least 0 (got -1)")


def test_rota_problems():
    text = MINIMAL + textwrap.dedent(
        """\
        [[partners]]
        symbol = "ISIL:A"
        url = "http://a/iso18626"
        [[rotas]]
        name = "r"
        service_types = []
        partners = []
        [[rotas]]
        name = "R"
        partners = ["not-a-symbol", "ISIL:A"]
        [[rotas]]
        service_types = "Loan"
        """
    )
    problems = problems_of(text)
    assert [(p.key, p.line) for p in problems] == [
        ("rotas[0].service_types", 9),
        ("rotas[0].partners", 10),
        ("rotas[1].name", 12),
        ("rotas[1].partners[0]", 13),
        ("rotas[2].name", 14),
        ("rotas[2].partners", 14),
        ("rotas[2].service_types", 15),
    ]
    assert "duplicate rota name 'R'" in problems[2].message


def test_no_traceback_for_unreadable_or_binary_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "missing.toml")
    (problem,) = info.value.problems
    assert problem.line is None and "cannot read file" in problem.message
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load(binary)
    assert info.value.problems[0].line == 2


# --------------------------------------------------------------------------
# check-config and default_config_text


def test_check_config_ok(capsys):
    assert cli.main(["check-config", str(EXAMPLE), "--on", "2026-12-25"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{EXAMPLE}: ok",
        "ISIL:XX-LEND1 (Example Library), 2 partners, 1 rota, closures in effect: none",
    ]


def test_check_config_reports_closures(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL
        + "[lending.closure]\nactive = true\nstart = 2026-12-20\nend = 2027-01-05\n"
        + "[borrowing.closure]\nactive = true\n"
    )
    assert cli.main(["check-config", str(path), "--on", "2026-12-25"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "ISIL:XX-ME (Me), 0 partners, 0 rotas, closures in effect: "
        "Lending suspended 2026-12-20 to 2027-01-05; Borrowing suspended until further notice"
    )
    assert cli.main(["check-config", str(path), "--on", "2026-12-01"]) == 0
    assert "scheduled: Lending suspended 2026-12-20 to 2027-01-05" in capsys.readouterr().out


def test_check_config_problems(capsys):
    path = DATA / "bad.toml"
    assert cli.main(["check-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == len(BAD_EXPECTED)
    assert lines[0] == f"{path}:3: node.name: required key 'name' is missing"


def test_check_config_missing_file(tmp_path, capsys):
    assert cli.main(["check-config", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read file" in capsys.readouterr().err


def test_default_config_text_loads(tmp_path):
    text = default_config_text(
        "ISIL:XX-NEW",
        'New "Library"',
        "0.0.0.0:9000",
        "https://ill.example.org/iso18626",
        partners=[
            {"symbol": "ISIL:XX-P1", "url": "http://p1/iso18626", "name": "P1"},
            {"symbol": "ISIL:XX-P2", "url": "http://p2/iso18626", "iso18626_version": "2021-2"},
        ],
    )
    path = tmp_path / "node.toml"
    path.write_text(text)
    config = load(path)
    assert str(config.node.symbol) == "ISIL:XX-NEW"
    assert config.node.name == 'New "Library"'
    assert (config.node.listen_host, config.node.listen_port) == ("0.0.0.0", 9000)
    assert config.node.public_url == "https://ill.example.org/iso18626"
    assert [p.name for p in config.partners] == ["P1", "ISIL:XX-P2"]
    assert config.partners[1].iso18626_version is Version.V2021_2
    assert [str(s) for s in config.rota_for("Loan").partners] == ["ISIL:XX-P1", "ISIL:XX-P2"]
    assert "#" in text  # commented

    bare = loads(default_config_text("ISIL:XX-NEW", "New", "127.0.0.1:8080", None))
    assert bare.partners == () and bare.rotas == ()
    assert bare.node.public_url == "http://127.0.0.1:8080/iso18626"

    again = loads(default_config_text("ISIL:XX-NEW", "New", partners=config.partners))
    assert again.partners == config.partners
