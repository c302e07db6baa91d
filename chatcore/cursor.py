"""Resume cursors.

A cursor names a position in one user's event log: ``"<epoch>.<seq>"``, where
*epoch* identifies the log (a new database, or a log reset, gets a new epoch)
and *seq* is the sequence number of the last event the client has seen (0 for
none). The server only hands out a cursor once every event at or below it is
committed, so a cursor never skips an event (Synapse #1449). A cursor from
another epoch, or older than the retained history, cannot be resumed: the
server says so (``recovered: false``) rather than replay partially
(Centrifugo's ``recovered`` flag, Matrix's ``limited``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EPOCH = re.compile(r"^[0-9a-z]{1,16}$")


class CursorError(ValueError):
    """The text is not a cursor. The message says what is allowed."""


@dataclass(frozen=True, order=True)
class Cursor:
    epoch: str
    seq: int

    def __post_init__(self) -> None:
        if not _EPOCH.match(self.epoch):
            raise CursorError(f"cursor epoch {self.epoch!r}: 1-16 characters 0-9 a-z")
        if self.seq < 0:
            raise CursorError(f"cursor seq {self.seq}: must be >= 0")

    def __str__(self) -> str:
        return f"{self.epoch}.{self.seq}"

    @classmethod
    def parse(cls, text: str) -> "Cursor":
        """Parse ``"<epoch>.<seq>"``; raise :class:`CursorError` for anything else."""
        if not isinstance(text, str) or len(text) > 40:
            raise CursorError(f"cursor {text!r}: expected '<epoch>.<seq>'")
        epoch, dot, seq = text.partition(".")
        if not dot or not seq.isdigit() or not seq.isascii():
            raise CursorError(f"cursor {text!r}: expected '<epoch>.<seq>' with a decimal seq")
        return cls(epoch, int(seq))
