"""The conformance suite against the mock peer: all pass; each breakage fails its check."""

from __future__ import annotations

import io

import pytest

from node.conformance import CHECKS, KitConfig, junit_xml, run_checks, write_logs
from node.mockpeer import BREAKS, RunningMock
from tests.harness import free_port


def config_for(mock: RunningMock, kit_port: int) -> KitConfig:
    return KitConfig(peer_url=mock.endpoint, peer_symbol="ISIL:SUP", our_symbol="ISIL:KIT",
                     public_url=f"http://127.0.0.1:{kit_port}/iso18626", timeout=4, settle=0.2)


async def test_every_check_passes_against_the_mock_peer(tmp_path):
    kit_port = free_port()
    async with RunningMock(delay=0.01) as mock:
        out = io.StringIO()
        results = await run_checks(config_for(mock, kit_port), listen=("127.0.0.1", kit_port),
                                   out=out)
    assert [r.name for r in results] == list(CHECKS)
    assert all(r.outcome == "PASS" for r in results), out.getvalue()
    assert "14 checks: 14 passed, 0 failed, 0 skipped" in out.getvalue()
    # reports: JUnit and one log per check holding every message in and out
    junit = junit_xml(results)
    assert b'tests="14" failures="0"' in junit
    write_logs(results, tmp_path / "logs")
    loan_log = (tmp_path / "logs" / "loan.log").read_text()
    assert "Loaned" in loan_log and ">>> POST" in loan_log and "<<< HTTP 200" in loan_log


@pytest.mark.parametrize("breakage", sorted(BREAKS))
async def test_each_check_fails_against_its_breakage(breakage):
    check = BREAKS[breakage]
    kit_port = free_port()
    async with RunningMock(delay=0.01, breaks={breakage}) as mock:
        results = await run_checks(config_for(mock, kit_port), listen=("127.0.0.1", kit_port),
                                   only=[check])
    [result] = results
    assert result.outcome == "FAIL", (breakage, result.detail, result.log.render())


def test_every_check_has_a_breakage():
    assert set(BREAKS.values()) == set(CHECKS)


async def test_role_and_only_select_checks():
    kit_port = free_port()
    async with RunningMock(delay=0.01) as mock:
        results = await run_checks(config_for(mock, kit_port), listen=("127.0.0.1", kit_port),
                                   role="supplier", only=["loan", "requester-cancel"])
    assert [(r.name, r.outcome) for r in results] == [("requester-cancel", "PASS")]
