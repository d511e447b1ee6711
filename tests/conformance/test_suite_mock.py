"""The conformance suite against the mock peer, in both ISO 18626 versions: all pass;
each breakage fails its check; everything the kit sends is officially valid."""

from __future__ import annotations

import io

import pytest

from node.conformance import CHECKS, KitConfig, Result, junit_xml, run_checks, write_logs
from node.mockpeer import BREAKS, RunningMock
from node.protocol.codes import Version
from tests.harness import free_port
from tests.protocol.test_writer import assert_officially_valid

VERSIONS = [Version.V1_2, Version.V2021_2]
ONLY_2021 = {name for name, c in CHECKS.items() if c.versions == (Version.V2021_2,)}


def config_for(mock: RunningMock, kit_port: int, version: Version) -> KitConfig:
    return KitConfig(peer_url=mock.endpoint, peer_symbol="ISIL:SUP", our_symbol="ISIL:KIT",
                     public_url=f"http://127.0.0.1:{kit_port}/iso18626", timeout=4, settle=0.2,
                     version=version)


def assert_kit_sent_only_valid_messages(results: list[Result], version: Version) -> int:
    """Every ISO 18626 message the kit sent (requests and its answers), but the ones
    broken on purpose, is valid against the official schema of ``version``."""
    checked = 0
    for r in results:
        for e in r.log.entries:
            if (e.direction == "out" and e.body.startswith("<?xml")
                    and "invalid on purpose" not in e.title):
                assert f'ill:version="{version.value}"' in e.body, (r.name, e.title)
                assert_officially_valid(e.body.encode(), version)
                checked += 1
    return checked


@pytest.mark.parametrize("version", VERSIONS, ids=str)
async def test_every_check_passes_against_the_mock_peer(tmp_path, version):
    kit_port = free_port()
    async with RunningMock(delay=0.01) as mock:
        out = io.StringIO()
        results = await run_checks(config_for(mock, kit_port, version),
                                   listen=("127.0.0.1", kit_port), out=out)
    assert [r.name for r in results] == list(CHECKS)
    expected = {n: "SKIP" if version is Version.V1_2 and n in ONLY_2021 else "PASS"
                for n in CHECKS}
    assert {r.name: r.outcome for r in results} == expected, out.getvalue()
    skipped = len(ONLY_2021) if version is Version.V1_2 else 0
    assert (f"{len(CHECKS)} checks: {len(CHECKS) - skipped} passed, 0 failed, "
            f"{skipped} skipped") in out.getvalue()
    assert f"ISO 18626 {version.value}" in out.getvalue()
    assert assert_kit_sent_only_valid_messages(results, version) > 40
    # reports: JUnit and one log per check holding every message in and out
    junit = junit_xml(results)
    assert f'tests="{len(CHECKS)}" failures="0"'.encode() in junit
    write_logs(results, tmp_path / "logs")
    loan_log = (tmp_path / "logs" / "loan.log").read_text()
    assert "Loaned" in loan_log and ">>> POST" in loan_log and "<<< HTTP 200" in loan_log


async def test_2021_retry_takes_up_the_offered_loan_condition():
    kit_port = free_port()
    async with RunningMock(delay=0.01) as mock:
        [result] = await run_checks(config_for(mock, kit_port, Version.V2021_2),
                                    listen=("127.0.0.1", kit_port), only=["retry"])
    assert result.outcome == "PASS", result.log.render()
    assert "MustMeetLoanCondition" in result.detail
    assert "accepting loanCondition NoReproduction" in result.detail
    bodies = [e.body for e in result.log.entries if e.direction == "out"]
    assert any("<retryInfo>" in b for b in (e.body for e in result.log.entries)), "offered"
    assert any("<requestType>Retry</requestType>" in b and "<loanCondition>NoReproduction<" in b
               for b in bodies)


@pytest.mark.parametrize("version", VERSIONS, ids=str)
@pytest.mark.parametrize("breakage", sorted(BREAKS))
async def test_each_check_fails_against_its_breakage(breakage, version):
    check = BREAKS[breakage]
    kit_port = free_port()
    async with RunningMock(delay=0.01, breaks={breakage}) as mock:
        results = await run_checks(config_for(mock, kit_port, version),
                                   listen=("127.0.0.1", kit_port), only=[check])
    [result] = results
    if version not in CHECKS[check].versions:
        assert result.outcome == "SKIP" and "--version 2021-2" in result.detail
        return
    assert result.outcome == "FAIL", (breakage, result.detail, result.log.render())
    # the report says what the kit sent, what came back and what the standard expects
    assert result.sent and result.got and result.expected, result.line()
    assert "we sent:" in result.line() and "expected:" in result.line()


def test_every_check_has_a_breakage():
    assert set(BREAKS.values()) == set(CHECKS)


@pytest.mark.parametrize("kit_version, mock_version", [(Version.V2021_2, Version.V1_2),
                                                       (Version.V1_2, Version.V2021_2)])
async def test_a_peer_answering_in_the_other_version_fails(kit_version, mock_version):
    kit_port = free_port()
    async with RunningMock(delay=0.01, version=mock_version) as mock:
        [result] = await run_checks(config_for(mock, kit_port, kit_version),
                                    listen=("127.0.0.1", kit_port),
                                    only=["confirmation-wellformed-valid"])
    assert result.outcome == "FAIL"
    assert f"not in ISO 18626 {kit_version.value}" in result.detail
    assert f"version='{mock_version.value}'" in result.got


async def test_2021_names_in_v12_and_v12_names_in_2021_are_explained():
    """The edition mix-up a librarian meets most: the report names the renamed element."""
    kit_port = free_port()
    async with RunningMock(delay=0.01, breaks={"other-edition-delivery-method"}) as mock:
        [result] = await run_checks(config_for(mock, kit_port, Version.V2021_2),
                                    listen=("127.0.0.1", kit_port), only=["loan"])
    assert result.outcome == "FAIL"
    assert "2021-2 renamed deliveryInfo/sentVia to deliveryMethod" in result.got


async def test_role_and_only_select_checks():
    kit_port = free_port()
    async with RunningMock(delay=0.01) as mock:
        results = await run_checks(config_for(mock, kit_port, Version.V1_2),
                                   listen=("127.0.0.1", kit_port),
                                   role="supplier", only=["loan", "requester-cancel"])
    assert [(r.name, r.outcome) for r in results] == [("requester-cancel", "PASS")]
