"""Protocol errors carry the ISO 18626 ErrorType they are answered with.

Like h2's exceptions carry an ``error_code``: whoever catches a
:class:`ProtocolError` can build the ERROR confirmation from it alone.
"""

from __future__ import annotations

from .codes import ErrorType


class ProtocolError(Exception):
    """A message we cannot accept; answered with an ERROR confirmation.

    ``value`` is the ``errorValue``: one line a person can act on, saying
    what was wrong and where.
    """

    def __init__(self, error_type: ErrorType, value: str):
        super().__init__(f"{error_type.value}: {value}")
        self.error_type = error_type
        self.value = value


class BadlyFormed(ProtocolError):
    """Not XML, not ISO 18626, or refused by the safe parser."""

    def __init__(self, value: str):
        super().__init__(ErrorType.BADLY_FORMED_MESSAGE, value)


class UnrecognisedValue(ProtocolError):
    """A value we do not know: an unknown request id, agency, or closed-list value."""

    def __init__(self, value: str):
        super().__init__(ErrorType.UNRECOGNISED_DATA_VALUE, value)
