"""Run checks against a peer: start the kit's endpoint, run each check with
its own log, print one line per check and a summary, write JUnit XML, the JSON
report and the per-check logs."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TextIO

import aiohttp
from lxml import etree

from .checks import CHECKS, Check, select
from .kit import (
    CheckFailed,
    CheckLog,
    CheckSkipped,
    Ctx,
    KitConfig,
    KitServer,
    NodeApiDriver,
    PeerUnreachable,
)


@dataclass
class Result:
    name: str
    role: str
    outcome: str  # PASS | FAIL | SKIP | ERROR (no verdict: the peer unreachable, a kit bug)
    detail: str
    seconds: float
    log: CheckLog
    warnings: list[str] = field(default_factory=list)
    # for a FAIL (or ERROR): what the kit sent, what came back, what ISO 18626 expects
    sent: str | None = None
    got: str | None = None
    expected: str | None = None

    def explanation(self) -> str:
        """A FAIL's or ERROR's sent / got / expected lines (empty when there are none)."""
        rows = [("we sent", self.sent), ("peer sent", self.got), ("expected", self.expected)]
        return "".join(f"     {label + ':':10} {text}\n" for label, text in rows if text)

    def line(self) -> str:
        text = f"{self.outcome} {self.name} — {self.detail}"
        if self.outcome in ("FAIL", "ERROR"):
            text += ("\n" + self.explanation()).rstrip("\n")
        for w in self.warnings:
            text += f"\n     warning: {w}"
        return text


async def detect_peer_kind(config: KitConfig, http: aiohttp.ClientSession) -> str:
    """mock (answers GET /api/flows like illmock), ill-node (--peer-api), or other."""
    if config.peer_kind != "auto":
        return config.peer_kind
    if config.peer_api:
        return "ill-node"
    base = config.peer_url.rsplit("/iso18626", 1)[0]
    try:
        async with http.get(base + "/api/flows?id=-",
                            timeout=aiohttp.ClientTimeout(total=3)) as resp:
            if resp.status == 200 and b"<flows" in (await resp.read())[:200]:
                return "mock"
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    return "other"


async def run_checks(config: KitConfig, *, listen: tuple[str, int], only: list[str] | None = None,
                     role: str = "both", out: TextIO | None = None) -> list[Result]:
    checks = select(only, role)
    kit = KitServer(config)
    await kit.start(*listen)
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession() as http:
            kind = await detect_peer_kind(config, http)
            driver = NodeApiDriver(config.peer_api, http, config.api_user) if (
                config.peer_api) else None
            if out:
                print(f"conformance: peer {config.peer_symbol} at {config.peer_url} ({kind}); "
                      f"we are {config.our_symbol} at {config.public_url}; "
                      f"ISO 18626 {config.version.value}", file=out)
            for chk in checks:
                result = await run_one(chk, config, kit, http, driver, kind)
                results.append(result)
                if out:
                    print(result.line(), file=out, flush=True)
    finally:
        await kit.stop()
    if out:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in totals(results).items())
        print(f"{len(results)} checks: {counts}", file=out)
    return results


#: A check's outcome as the summary and the JSON report name it.
OUTCOMES = {"PASS": "passed", "FAIL": "failed", "SKIP": "skipped", "ERROR": "error"}


def totals(results: list[Result]) -> dict[str, int]:
    """Checks per outcome, by the names of :data:`OUTCOMES`."""
    return {name: sum(r.outcome == outcome for r in results) for outcome, name in OUTCOMES.items()}


async def run_one(chk: Check, config: KitConfig, kit: KitServer, http, driver, kind) -> Result:
    log = CheckLog(chk.name)
    log.note(f"{chk.name} ({chk.role} role, ISO 18626 {config.version.value}): {chk.summary}")
    kit.begin(log)
    ctx = Ctx(config, kit, http, log, driver, kind)
    started = time.monotonic()
    failed: CheckFailed | None = None
    try:
        if config.version not in chk.versions:
            raise CheckSkipped(
                f"only in ISO 18626 {', '.join(v.value for v in chk.versions)} "
                f"(run with --version {chk.versions[0].value})")
        detail = await asyncio.wait_for(chk.run(ctx), timeout=config.timeout * 6)
        if ctx.notes:
            detail += " (" + "; ".join(ctx.notes) + ")"
        outcome = "PASS"
    except PeerUnreachable as exc:  # no verdict on the peer
        outcome, detail, failed = "ERROR", str(exc), exc
    except CheckFailed as exc:
        outcome, detail, failed = "FAIL", str(exc), exc
    except CheckSkipped as exc:
        outcome, detail = "SKIP", str(exc)
    except TimeoutError:
        outcome, detail = "FAIL", f"the check did not finish within {config.timeout * 6:g} s"
    except Exception as exc:  # noqa: BLE001 - a kit bug must not hide the other checks
        outcome, detail = "ERROR", f"kit error: {type(exc).__name__}: {exc}"
    finally:
        kit.log = None
    result = Result(name=chk.name, role=chk.role, outcome=outcome, detail=detail,
                    seconds=time.monotonic() - started, log=log, warnings=list(ctx.warnings),
                    sent=failed and failed.sent, got=failed and failed.got,
                    expected=failed and failed.expected)
    log.note(f"{outcome}: {detail}\n{result.explanation()}".rstrip())
    for w in ctx.warnings:
        log.note(f"warning: {w}")
    return result


def write_logs(results: list[Result], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for r in results:
        (directory / f"{r.name}.log").write_text(r.log.render(), encoding="utf-8")


def junit_xml(results: list[Result], suite: str = "iso18626-conformance") -> bytes:
    root = etree.Element("testsuites")
    s = etree.SubElement(root, "testsuite", name=suite, tests=str(len(results)),
                         failures=str(sum(r.outcome == "FAIL" for r in results)),
                         errors=str(sum(r.outcome == "ERROR" for r in results)),
                         skipped=str(sum(r.outcome == "SKIP" for r in results)),
                         time=f"{sum(r.seconds for r in results):.3f}")
    for r in results:
        case = etree.SubElement(s, "testcase", classname=f"conformance.{r.role}", name=r.name,
                                time=f"{r.seconds:.3f}")
        if r.outcome == "FAIL":
            etree.SubElement(case, "failure", message=r.detail).text = (
                r.explanation() + "\n" + r.log.render())
        elif r.outcome == "ERROR":
            etree.SubElement(case, "error", message=r.detail).text = (
                r.explanation() + "\n" + r.log.render())
        elif r.outcome == "SKIP":
            etree.SubElement(case, "skipped", message=r.detail)
        else:
            etree.SubElement(case, "system-out").text = r.log.render()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def json_report(results: list[Result], config: KitConfig) -> bytes:
    """The JSON report: the run (the kit, the peer, the ISO 18626 version), each check
    with what the JUnit report says of it, and the totals."""
    checks = []
    for r in results:
        check = {"id": r.name, "title": CHECKS[r.name].summary, "role": r.role,
                 "outcome": OUTCOMES[r.outcome], "message": r.detail,
                 "duration_seconds": round(r.seconds, 3), "warnings": r.warnings}
        # a failure's sent / got / expected, as under its line in the text report
        check.update((k, v) for k, v in (("sent", r.sent), ("got", r.got),
                                         ("expected", r.expected)) if v)
        checks.append(check)
    report = {
        "kit": {"version": metadata.version("ill-node"), "symbol": config.our_symbol,
                "url": config.public_url},
        "peer": {"symbol": config.peer_symbol, "url": config.peer_url},
        "iso18626_version": config.version.value,
        "checks": checks,
        "totals": {"checks": len(results), **totals(results),
                   "duration_seconds": round(sum(r.seconds for r in results), 3)},
    }
    return (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode()
