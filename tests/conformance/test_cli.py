"""``ill-node conformance`` and ``ill-node mock-peer`` as commands: the version options."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from importlib import metadata
from pathlib import Path

import pytest

from node.conformance import CHECKS, load_hints
from node.mockpeer import RunningMock
from node.protocol.codes import Version
from tests.harness import free_port

CLI = [sys.executable, "-m", "node.cli"]


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode()


def test_hints_file_may_name_the_peers_version(tmp_path):
    hints = tmp_path / "hints.toml"
    hints.write_text('iso18626_version = "2021-2"\n[loan]\nisbn = "9780140449242"\n')
    assert load_hints(hints) == ({"loan": {"isbn": "9780140449242"}}, Version.V2021_2)
    hints.write_text('iso18626_version = "1.3"\n')
    with pytest.raises(ValueError, match="iso18626_version must be one of 1.2, 2021-2"):
        load_hints(hints)
    hints.write_text('[loan]\nisbn = "1"\n')
    assert load_hints(hints)[1] is None


async def test_version_comes_from_the_option_else_the_hints_file(tmp_path):
    hints = tmp_path / "hints.toml"
    hints.write_text('iso18626_version = "2021-2"\n')
    async with RunningMock(delay=0.01) as mock:
        common = ["conformance", "--peer-url", mock.endpoint, "--peer-symbol", "ISIL:SUP",
                  "--only", "error-on-duplicate-request-id,lost"]
        code, out = await run_cli(*common, "--listen", f"127.0.0.1:{free_port()}",
                                  "--scenario-hints", str(hints), "--log-dir",
                                  str(tmp_path / "logs"))
        assert code == 0, out
        assert "ISO 18626 2021-2" in out and "PASS lost" in out
        assert 'ill:version="2021-2"' in (tmp_path / "logs" / "lost.log").read_text()
        code, out = await run_cli(*common, "--listen", f"127.0.0.1:{free_port()}",
                                  "--scenario-hints", str(hints), "--version", "1.2")
        assert code == 0, out
        assert "ISO 18626 1.2" in out and "SKIP lost — only in ISO 18626 2021-2" in out


async def test_mock_peer_command_speaks_the_version_it_is_given(tmp_path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "mock-peer", "--listen", f"127.0.0.1:{port}", "--version", "2021-2",
        "--delay", "0.01", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        kit = ["conformance", "--peer-url", f"http://127.0.0.1:{port}/iso18626",
               "--peer-symbol", "ISIL:SUP", "--only", "confirmation-wellformed-valid"]
        code, out = await run_cli(*kit, "--listen", f"127.0.0.1:{free_port()}",
                                  "--version", "2021-2", "--junit", str(tmp_path / "j.xml"))
        assert code == 0, out
        # the same mock fails a kit speaking 1.2: it answers in 2021-2, and says so
        code, out = await run_cli(*kit, "--listen", f"127.0.0.1:{free_port()}",
                                  "--junit", str(tmp_path / "j.xml"))
        assert code == 1, out
        assert "FAIL confirmation-wellformed-valid — the confirmation is not in ISO 18626 1.2" \
            in out
        assert "peer sent:" in out and "version='2021-2'" in out
        junit = Path(tmp_path / "j.xml").read_text()
        assert "version=&apos;2021-2&apos;" in junit or "version='2021-2'" in junit
    finally:
        proc.terminate()
        await proc.wait()


async def test_json_report_holds_the_run_each_check_and_the_totals(tmp_path):
    report = tmp_path / "reports" / "conformance.json"
    kit_port = free_port()
    async with RunningMock(delay=0.01, breaks={"accept-duplicate"}) as mock:
        code, out = await run_cli(
            "conformance", "--peer-url", mock.endpoint, "--peer-symbol", "ISIL:SUP",
            "--listen", f"127.0.0.1:{kit_port}", "--json", str(report),
            "--only", "confirmation-wellformed-valid,error-on-duplicate-request-id,lost")
    assert code == 1, out
    got = json.loads(report.read_text())
    assert got["kit"] == {"version": metadata.version("ill-node"),
                          "symbol": "ISIL:XX-CONFORMANCE",
                          "url": f"http://127.0.0.1:{kit_port}/iso18626"}
    assert got["peer"] == {"symbol": "ISIL:SUP", "url": mock.endpoint}
    assert got["iso18626_version"] == "1.2"
    checks = {c["id"]: c for c in got["checks"]}
    assert list(checks) == ["confirmation-wellformed-valid", "error-on-duplicate-request-id",
                            "lost"]
    assert {i: c["outcome"] for i, c in checks.items()} == {
        "confirmation-wellformed-valid": "passed", "error-on-duplicate-request-id": "failed",
        "lost": "skipped"}
    text_outcome = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    for check_id, c in checks.items():
        assert c["title"] == CHECKS[check_id].summary and c["role"] == "requester"
        assert c["message"] and f"{text_outcome[c['outcome']]} {check_id} — {c['message']}" in out
    assert checks["lost"]["message"].startswith("only in ISO 18626 2021-2")
    failed = checks["error-on-duplicate-request-id"]
    assert failed["sent"] and failed["got"] and failed["expected"], failed
    assert f"expected:  {failed['expected']}" in out
    assert "sent" not in checks["confirmation-wellformed-valid"]
    assert checks["confirmation-wellformed-valid"]["duration_seconds"] > 0
    assert got["totals"] == {
        "checks": 3, "passed": 1, "failed": 1, "skipped": 1, "error": 0,
        "duration_seconds": pytest.approx(sum(c["duration_seconds"] for c in checks.values()),
                                          abs=0.002)}


async def test_a_peer_that_cannot_be_reached_is_an_error_not_a_failure(tmp_path):
    """No verdict on a peer nobody listens for: ERROR in the text, the JSON (``error``)
    and the JUnit report (an ``<error>``), and exit 1 as for a failure."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/iso18626"
    code, out = await run_cli(
        "conformance", "--peer-url", dead, "--peer-symbol", "ISIL:SUP",
        "--listen", f"127.0.0.1:{free_port()}", "--only", "confirmation-wellformed-valid",
        "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"))
    assert code == 1, out
    assert f"ERROR confirmation-wellformed-valid — cannot connect to the peer at {dead}" in out
    assert "peer sent: no connection" in out
    assert "1 checks: 0 passed, 0 failed, 0 skipped, 1 error" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["checks"][0]["outcome"] == "error"
    assert report["totals"]["error"] == 1 and report["totals"]["failed"] == 0
    junit = (tmp_path / "j.xml").read_text()
    assert 'failures="0" errors="1"' in junit and "<error message=" in junit


async def test_bad_version_option_is_refused():
    code, out = await run_cli("conformance", "--peer-url", "http://127.0.0.1:9/iso18626",
                              "--peer-symbol", "ISIL:SUP", "--version", "1.3")
    assert code == 2 and "invalid choice: '1.3'" in out

