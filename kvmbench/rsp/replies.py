"""The replies every packet may get: ``OK``, ``E NN`` (or ``E.text``) and
the empty reply, which means the stub does not know the packet (GDB
manual, "Packets": "an empty response ... the packet is not supported").
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import is_hex

OK = b"OK"
#: The reply to a packet the stub does not implement.
UNSUPPORTED = b""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """``E NN``: ``code`` (the meaning is the stub's own), or with the
    ``error-message`` feature ``E.text`` (``code`` is then None)."""

    code: int | None
    message: str | None = None

    def __str__(self) -> str:
        if self.message is not None:
            return self.message
        return f"E{self.code:02x}" if self.code is not None else "E"


def is_ok(reply: bytes) -> bool:
    return reply == OK


def is_unsupported(reply: bytes) -> bool:
    return reply == UNSUPPORTED


def parse_error_reply(reply: bytes) -> ErrorReply | None:
    """The error a reply carries, or None if it is not an error.

    ``E`` and exactly two hex digits is an error even where hex data is
    expected: memory and register data always has an even number of
    digits, so the three-character form cannot be data.
    """
    if len(reply) == 3 and reply[:1] == b"E" and is_hex(reply[1:]):
        return ErrorReply(int(reply[1:], 16))
    if reply.startswith(b"E."):
        return ErrorReply(None, reply[2:].decode("utf-8", "replace"))
    return None


def build_error_reply(code: int) -> bytes:
    """``E`` and two hex digits (0..255)."""
    if not 0 <= code <= 0xFF:
        raise RspError(f"error code {code} is not 0..255")
    return b"E%02x" % code
