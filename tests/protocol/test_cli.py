"""``ill-node validate FILE...``."""

from __future__ import annotations

from pathlib import Path

from node.cli import main

SAMPLES = Path("/work/shared/iso18626/samples")
DATA = Path(__file__).parent / "data"


def run(capsys, *args) -> tuple[int, list[str]]:
    code = main(["validate", *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


def test_valid_files(capsys):
    files = [SAMPLES / "broker_test_testdata_request-loaned.xml",
             SAMPLES / "broker_test_testdata_supmsg-ok.xml", DATA / "2021-2" / "sam-retry.xml"]
    code, lines = run(capsys, *files)
    assert code == 0
    assert lines == [f"{f}: valid" for f in files]


def test_invalid_files_exit_1_with_one_line_reasons(capsys, tmp_path):
    valid = SAMPLES / "broker_test_testdata_supmsg-ok.xml"
    bad_status = SAMPLES / "broker_test_testdata_supmsg-invalid-status.xml"
    no_message = SAMPLES / "broker_test_testdata_msg-invalid.xml"
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"not xml")
    missing = tmp_path / "missing.xml"
    code, lines = run(capsys, valid, bad_status, no_message, garbage, missing)
    assert code == 1
    assert lines[0] == f"{valid}: valid"
    assert lines[1].startswith(
        f"{bad_status}: invalid: supplyingAgencyMessage/statusInfo/status: 'WeCouldLoan'")
    assert lines[2] == f"{no_message}: invalid: ISO18626Message holds no message"
    assert lines[3].startswith(f"{garbage}: invalid: not well-formed XML")
    assert lines[4].startswith(f"{missing}: invalid: cannot read")
    assert len(lines) == 5


def test_schema_failure_counts(capsys, tmp_path):
    # Readable by our lenient reader (unprefixed version, +0000) but not schema-valid.
    text = (SAMPLES / "broker_test_testdata_supmsg-ok.xml").read_text()
    text = text.replace('ill:version="1.2"', 'version="1.2"').replace(
        "2024-12-12T20:12:00.62959771Z", "2024-12-12T20:12:00+0000")
    sloppy = tmp_path / "sloppy.xml"
    sloppy.write_text(text)
    code, lines = run(capsys, sloppy)
    assert code == 1
    assert lines[0].startswith(f"{sloppy}: invalid: line ")


def test_version_option(capsys):
    v12 = SAMPLES / "broker_test_testdata_request-loaned.xml"
    code, lines = run(capsys, "--version", "1.2", v12)
    assert (code, lines) == (0, [f"{v12}: valid"])
    code, lines = run(capsys, "--version", "2021-2", v12)
    assert code == 1
    assert lines[0].startswith(f"{v12}: invalid: line ")
    assert "bibliographicItemIdentifier" in lines[0]
