"""Protocol codec throughput: run ``.venv/bin/python bench/protocol_bench.py``.

For a typical request and a typical supplying agency message (CrossLink test
samples) prints messages/second and microseconds/message for

  (a) lxml bare ``etree.fromstring``
  (b) ``node.protocol.parse``
  (c) ``parse`` + validation against our schema
  (d) ``serialise``
  (e) parse + validate + serialise

each the median of several ``timeit`` repeats.
"""

from __future__ import annotations

import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxml import etree

from node.protocol.reader import parse, parse_element
from node.protocol.safe_xml import parse_xml
from node.protocol.schema import schema_for
from node.protocol.writer import serialise

SAMPLES = Path("/work/shared/iso18626/samples")
CASES = {
    "request": SAMPLES / "broker_test_testdata_request-loaned.xml",
    "supplyingAgencyMessage": SAMPLES / "broker_test_testdata_supmsg-ok.xml",
}
REPEATS = 7


def measure(fn, number: int) -> float:
    """Median seconds per call over REPEATS runs of ``number`` calls."""
    fn()  # warm up (compiles schemas, fills caches)
    times = timeit.repeat(fn, number=number, repeat=REPEATS)
    return statistics.median(times) / number


def main() -> None:
    print(f"Python {sys.version.split()[0]}, lxml {etree.__version__}; "
          f"median of {REPEATS} repeats")
    print(f"{'message':<24} {'step':<34} {'msg/s':>10} {'us/msg':>9}")
    for name, path in CASES.items():
        for label, fn in steps_for(path.read_bytes()):
            seconds = measure(fn, 2000)
            print(f"{name:<24} {label:<34} {1 / seconds:>10,.0f} {seconds * 1e6:>9.1f}")


def steps_for(data: bytes):
    envelope = parse(data)
    schema = schema_for(envelope.version)

    def parse_validate():
        root = parse_xml(data)
        env = parse_element(root)
        if not schema.validate(root):
            raise AssertionError(schema.error_log.last_error)
        return env

    return [
        ("(a) lxml etree.fromstring", lambda: etree.fromstring(data)),
        ("(b) parse", lambda: parse(data)),
        ("(c) parse + validate (our schema)", parse_validate),
        ("(d) serialise", lambda: serialise(envelope)),
        ("(e) parse + validate + serialise", lambda: serialise(parse_validate())),
    ]


if __name__ == "__main__":
    main()
