"""A scriptable ISO 18626 peer speaking CrossLink illmock's scenario language.

``scenario.py`` and ``core.py`` are pure (bytes and time in, bytes and
"send this later" out); ``server.py`` is the aiohttp edge; ``flows.py`` the
message log.  See docs/conformance.md.
"""

from .core import BREAKS, QUIRKS, MockPeer, Reply, Send
from .scenario import ALL_SCENARIOS, Plan, note_token, plan_for, scenario_for
from .server import MockServer, RunningMock

__all__ = [
    "ALL_SCENARIOS",
    "BREAKS",
    "QUIRKS",
    "MockPeer",
    "MockServer",
    "Plan",
    "Reply",
    "RunningMock",
    "Send",
    "note_token",
    "plan_for",
    "scenario_for",
]
