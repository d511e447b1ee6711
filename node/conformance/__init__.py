"""ISO 18626 conformance kit: named checks run against a peer under test.

``rules.py`` (the standard's ordering rules, pure), ``kit.py`` (the kit's
endpoint, logs, sending, drivers), ``checks.py`` (the checks), ``runner.py``
(running, reporting: JUnit, JSON).  See docs/conformance.md.
"""

from .checks import CHECKS, Check, select
from .kit import CheckFailed, CheckSkipped, KitConfig, load_hints
from .runner import Result, json_report, junit_xml, run_checks, write_logs

__all__ = ["CHECKS", "Check", "CheckFailed", "CheckSkipped", "KitConfig", "Result",
           "json_report", "junit_xml", "load_hints", "run_checks", "select", "write_logs"]
