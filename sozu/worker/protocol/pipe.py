"""The byte pipe's bookkeeping, without any IO: half-close, end of the pipe, idle deadlines.

A pipe joins a front (client) and a back (backend) connection; bytes flow both ways untouched.
`PipeState` is told what happened (bytes moved, an end of stream from one side, a clock tick)
and says what to do (shut the other side's writing, close both, which side idled out). The
asyncio adapter (`sozu.worker.tcp`) owns the transports and the timers and asks it.

Half-close: an end of stream from one side is passed on as an end of stream to the other
(`write_eof`) and the other direction keeps flowing; the pipe ends once both directions have
ended, or at once when either side resets or closes. Idle deadlines: the front side must
show activity within `front_timeout`, the back side within `back_timeout` (0 = never).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

FRONT = "front"
BACK = "back"


class Verdict(Enum):
    """What the adapter must do after an event."""

    NOTHING = "nothing"
    SHUT_OTHER = "shut_other"  # pass the end of stream on: write_eof on the other side
    CLOSE = "close"  # close both sides


@dataclass
class PipeState:
    """Directions still open, byte counts and last activity of a pipe."""

    front_timeout: float
    back_timeout: float
    started: float
    bytes_in: int = 0  # client -> backend
    bytes_out: int = 0  # backend -> client
    front_ended: bool = False  # the client sent its end of stream
    back_ended: bool = False  # the backend sent its end of stream
    closed: bool = False
    last_front: float = 0.0
    last_back: float = 0.0

    def __post_init__(self) -> None:
        self.last_front = self.last_back = self.started

    def received(self, side: str, size: int, now: float) -> None:
        if side == FRONT:
            self.bytes_in += size
            self.last_front = now
        else:
            self.bytes_out += size
            self.last_back = now

    def ended(self, side: str, can_half_close: bool) -> Verdict:
        """One side sent its end of stream."""
        if side == FRONT:
            self.front_ended = True
        else:
            self.back_ended = True
        if (self.front_ended and self.back_ended) or not can_half_close:
            self.closed = True
            return Verdict.CLOSE
        return Verdict.SHUT_OTHER

    def lost(self) -> Verdict:
        """One side's connection is gone (closed or reset)."""
        if self.closed:
            return Verdict.NOTHING
        self.closed = True
        return Verdict.CLOSE

    def idle_side(self, now: float) -> str | None:
        """The side whose idle timeout has run out at `now`, if any."""
        if self.front_timeout > 0 and now - self.last_front >= self.front_timeout:
            return FRONT
        if self.back_timeout > 0 and now - self.last_back >= self.back_timeout:
            return BACK
        return None

    def next_deadline(self) -> float | None:
        """When `idle_side` may next return a side (None: no timeout)."""
        deadlines = []
        if self.front_timeout > 0:
            deadlines.append(self.last_front + self.front_timeout)
        if self.back_timeout > 0:
            deadlines.append(self.last_back + self.back_timeout)
        return min(deadlines) if deadlines else None
