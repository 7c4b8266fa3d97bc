"""Back-pressure between the two transports of a proxied exchange.

A transport's reading is paused for one or more reasons (bits): its peer's write buffer is over
the high-water mark (`WRITE`), a pipelined request waits for the previous answer (`PIPELINE`),
a request body waits for a backend connection (`PENDING`). `ReadGate` pauses the transport when
the first reason appears and resumes it when the last one clears, so the reasons never undo
each other. Write buffers get `buffer_size` as their high-water mark (`limit_writes`), so
asyncio calls `pause_writing` / `resume_writing` on the protocol that owns the writing side,
and that protocol flips `WRITE` on its peer's gate. Memory per connection then stays within a
few `buffer_size` whatever the body size.
"""

from __future__ import annotations

import asyncio

WRITE = 1
PIPELINE = 2
PENDING = 4


def limit_writes(transport: asyncio.BaseTransport, buffer_size: int) -> None:
    """High-water mark `buffer_size` (low: a quarter) on a transport's write buffer.

    Duck-typed: uvloop's transports do not inherit from asyncio's transport classes."""
    set_limits = getattr(transport, "set_write_buffer_limits", None)
    if set_limits is not None:
        set_limits(high=buffer_size, low=buffer_size // 4)


class ReadGate:
    """Pause/resume of one transport's reading, by reason bits."""

    __slots__ = ("reasons", "transport")

    def __init__(self, transport: asyncio.Transport | None = None) -> None:
        self.transport = transport
        self.reasons = 0

    def pause(self, reason: int) -> None:
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if not self.reasons & reason:
            return
        self.reasons &= ~reason
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def attach(self, transport: asyncio.Transport | None) -> None:
        """Follow another transport (a pooled backend connection changing hands)."""
        self.transport = transport
        self.reasons = 0
