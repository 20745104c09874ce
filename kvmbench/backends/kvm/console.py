"""The guest's serial console: bytes written to COM1, kept and streamed."""

from __future__ import annotations

from collections.abc import Callable


class Console:
    """Collects the guest's output; hands complete lines (and the tail at each
    stop) to ``on_output`` so front ends can stream it without per-byte calls."""

    def __init__(self, on_output: Callable[[str], None] | None = None) -> None:
        self.on_output = on_output
        self._chunks: list[bytes] = []
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending += data
        if b"\n" in data:
            self.flush()

    def flush(self) -> None:
        """Hand over whatever the guest printed since the last flush."""
        if not self._pending:
            return
        chunk = bytes(self._pending)
        self._pending.clear()
        self._chunks.append(chunk)
        if self.on_output is not None:
            self.on_output(chunk.decode("utf-8", "replace"))

    @property
    def text(self) -> str:
        """Everything the guest printed so far."""
        return (b"".join(self._chunks) + bytes(self._pending)).decode("utf-8", "replace")
