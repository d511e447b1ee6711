"""``ill-node demo``: three nodes on loopback, every story green, and a broken story caught."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from node import cli
from node.demo import DEFAULT_STORIES, Demo, Story, StoryLog, run_demo

STORY_KEYS = [s.key for s in DEFAULT_STORIES]
OK = r"(?:✓|OK)"
BAD = r"(?:✗|FAILED)"


def _section(lines: list[str], title: str) -> list[str]:
    """The lines after ``title`` up to the next blank line."""
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_demo_runs_every_story_green(tmp_path, capsys):
    directory = tmp_path / "demo-data"
    code = cli.main(["demo", "--dir", str(directory)])
    output = capsys.readouterr().out
    lines = output.splitlines()
    assert code == 0, output

    # Every story reported OK, none failed.
    stories = _section(lines, "Stories:")
    for key in STORY_KEYS:
        assert any(re.match(rf"\s+{OK} {key}\b", line) for line in stories), output
    assert not re.search(rf"{BAD} FAILED|demo FAILED", output), output
    assert re.search(rf"{OK} all {len(STORY_KEYS)} stories ended as they should", output)

    # The loan went through the closed lender to the open one, with the closure dates.
    assert re.search(r"\[loan\] Beta is closed for lending: Unfilled 'Lending suspended "
                     r"\d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d'", output), output
    assert re.search(r"\[loan\] renewed by Gamma \(due \d{4}-\d\d-\d\d\)", output), output
    assert re.search(r"\[closure\] a new request for .* is refused: HTTP 409: "
                     r"Borrowing suspended \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d", output), output

    # The final table lists each request the stories made, with its final states.
    table = "\n".join(_section(lines, "Requests:"))
    made = re.findall(r"^\[(\w+)\] Alpha asks for .*\((B-[0-9A-Z]{8})\)", output, re.MULTILINE)
    assert [story for story, _ in made] == ["loan", "copy", "condition", "cancel"]
    expected_final = {"loan": ("complete", "LOAN_COMPLETED"),
                      "copy": ("copy_delivered", "COPY_COMPLETED"),
                      "condition": ("shipped", "SHIPPED"),
                      "cancel": ("cancelled", "CANCELLED")}
    rows = _rows(table)
    for story, public_id in made:
        row = next(r for r in rows if public_id in r)
        borrower, lender = expected_final[story]
        assert row.split()[0] == story and borrower in row and "Gamma L-" in row, table
        assert re.search(rf"Gamma L-\w+: {lender}\b", row), table
    assert re.search(r"Beta L-\w+: UNFILLED", table), table
    assert "Gamma: supplied" in table
    closure_row = next(r for r in rows if r.split()[0] == "closure")
    assert "(none)" in closure_row and "not created" in closure_row, table

    # Data and configurations stay behind, the path printed.
    assert f"Data and configurations left in {directory}" in output
    for key in ("alpha", "beta", "gamma"):
        assert (directory / key / "config.toml").is_file()
        assert (directory / key / "ill.db").is_file()
        assert (directory / key / "holdings.csv").is_file()


def _rows(table: str) -> list[str]:
    """The table's rows, each with its continuation lines (a lender per line)."""
    rows: list[str] = []
    for line in table.splitlines()[2:]:
        if line[:4].strip():
            rows.append(line)
        elif rows:
            rows[-1] += "\n" + line
    return rows


async def _never_completes(demo: Demo, say: StoryLog) -> None:
    """A broken step: waits for a state the request cannot reach."""
    view = await demo.create_borrowing(demo["alpha"], "broken", {
        "title": "Crime and Punishment", "isbn": "9780140449136", "patron_id": "P-9",
        "pickup_location": "Alpha Main Desk", "format": "physical"})
    say(f"Alpha asks for 'Crime and Punishment' ({view['id']})")
    await demo.wait(demo["alpha"], "borrowing", view["id"], "complete", timeout=0.5)


async def test_a_failing_story_makes_the_demo_fail(tmp_path):
    lines: list[str] = []
    broken = Story("broken", "a step that cannot succeed", _never_completes)
    closure = next(s for s in DEFAULT_STORIES if s.key == "closure")
    code = await run_demo(tmp_path / "demo", stories=[closure, broken], out=lines.append)
    output = "\n".join(lines)
    assert code != 0, output
    assert re.search(rf"\[broken\] {BAD} FAILED: timed out: Alpha borrowing request B-\w+ is",
                     output), output
    assert "history of borrowing request" in output  # the failure shows the request's history
    stories = _section(lines, "Stories:")
    assert any(re.match(rf"\s+{OK} closure\b", line) for line in stories), output
    assert any(re.match(rf"\s+{BAD} broken\b", line) for line in stories), output
    assert re.search(r"demo FAILED .*: broken did not end as it should", output), output


async def test_keep_running_leaves_the_nodes_up_until_stopped(tmp_path):
    lines: list[str] = []
    stop = asyncio.Event()
    closure = next(s for s in DEFAULT_STORIES if s.key == "closure")
    demo = asyncio.create_task(run_demo(tmp_path / "demo", stories=[closure], keep_running=True,
                                        out=lines.append, stop=stop))
    for _ in range(400):
        if any(line.startswith("Try the staff API") for line in lines) or demo.done():
            break
        await asyncio.sleep(0.05)
    assert not demo.done(), "\n".join(lines)
    urls = re.findall(r"^  (?:Alpha|Beta|Gamma)\s+(http://127\.0\.0\.1:\d+)", "\n".join(lines),
                      re.MULTILINE)
    assert len(urls) == 3
    async with aiohttp.ClientSession() as http:
        for url in urls:
            async with http.get(f"{url}/healthz") as resp:
                assert resp.status == 200
        async with http.get(f"{urls[0]}/api/borrowing/closure") as resp:
            assert (await resp.json())["active"] is False  # the closure story reopened it
    stop.set()
    assert await asyncio.wait_for(demo, 30) == 0


async def test_refuses_to_delete_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    lines: list[str] = []
    assert await run_demo(tmp_path, out=lines.append) == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert "not deleting it" in "\n".join(lines)
