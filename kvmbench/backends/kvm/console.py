"""The guest's serial console: bytes written to COM1, kept and streamed."""

from __future__ import annotations

from collections.abc import Callable

#: What the console keeps: the last this many bytes (a guest may print forever).
DEFAULT_LIMIT = 1 << 20


class Console:
    """Collects the guest's output; hands complete lines (and the tail at each
    stop) to ``on_output`` so front ends can stream it without per-byte calls.

    Only the last ``limit`` bytes are kept for :attr:`text`; ``dropped``
    counts what went before. Everything is streamed to ``on_output``."""

    def __init__(self, on_output: Callable[[str], None] | None = None,
                 limit: int = DEFAULT_LIMIT) -> None:
        self.on_output = on_output
        self.limit = limit
        self.dropped = 0
        self._kept = bytearray()
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending += data
        if b"\n" in data or len(self._pending) >= self.limit:
            self.flush()

    def flush(self) -> None:
        """Hand over whatever the guest printed since the last flush."""
        if not self._pending:
            return
        chunk = bytes(self._pending)
        self._pending.clear()
        self._kept += chunk
        if len(self._kept) > self.limit:
            excess = len(self._kept) - self.limit
            del self._kept[:excess]
            self.dropped += excess
        if self.on_output is not None:
            self.on_output(chunk.decode("utf-8", "replace"))

    @property
    def text(self) -> str:
        """What the guest printed, its last ``limit`` bytes."""
        return (bytes(self._kept) + bytes(self._pending))[-self.limit:].decode("utf-8", "replace")
