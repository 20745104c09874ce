"""``qXfer:OBJECT:read:ANNEX:OFFSET,LENGTH``: reading a named document in
chunks (target.xml and its includes, threads, the exec file name...).

GDB manual, "General Query Packets" > ``qXfer``: the reply is ``m`` and
data (more follows: ask again at the next offset) or ``l`` and data (the
last of it; ``l`` alone past the end), binary data escaped as in every
packet; ``E NN`` for an error and the empty reply if the object is not
supported.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import parse_hex_int, show

_PREFIX = b"qXfer:"


@dataclass(frozen=True, slots=True)
class XferRead:
    """A read request: ``length`` bytes of ``object``'s ``annex`` at ``offset``."""

    object: str
    annex: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class XferChunk:
    """One reply: ``data`` and whether it is the ``last`` chunk (``l``)."""

    data: bytes
    last: bool


def _check_name(name: str, what: str) -> bytes:
    encoded = name.encode("ascii", "replace")
    if (what == "object" and b":" in encoded) or any(c in encoded for c in b"#$}*;"):
        raise RspError(f"qXfer {what} {name!r} cannot be sent")
    return encoded


def build_xfer_read(object: str, annex: str, offset: int, length: int) -> bytes:  # noqa: A002
    """``qXfer:object:read:annex:offset,length``."""
    if offset < 0 or length <= 0:
        raise RspError(f"qXfer read needs offset >= 0 and length > 0, not {offset}, {length}")
    return b"qXfer:%s:read:%s:%x,%x" % (_check_name(object, "object"), _check_name(annex, "annex"), offset, length)


def parse_xfer_read(packet: bytes) -> XferRead:
    """The request in a ``qXfer:...:read:...`` packet (server side)."""
    if not packet.startswith(_PREFIX):
        raise RspError(f"not a qXfer packet: {show(packet)}")
    head, colon, span = packet[len(_PREFIX):].rpartition(b":")
    parts = head.split(b":", 2)
    if not colon or len(parts) != 3 or not parts[0]:
        raise RspError(f"qXfer packet is not object:read:annex:offset,length: {show(packet)}")
    obj, operation, annex = parts
    if operation != b"read":
        raise RspError(f"qXfer operation {operation.decode('ascii', 'replace')!r} is not read")
    offset_text, comma, length_text = span.partition(b",")
    if not comma:
        raise RspError(f"qXfer read needs offset,length: {show(packet)}")
    return XferRead(
        obj.decode("ascii", "replace"),
        annex.decode("ascii", "replace"),
        parse_hex_int(offset_text, "qXfer offset"),
        parse_hex_int(length_text, "qXfer length"),
    )


def build_xfer_reply(document: bytes, offset: int, length: int) -> bytes:
    """The chunk of ``document`` a read at ``offset`` for ``length`` gets."""
    chunk = document[offset : offset + length]
    return (b"l" if offset + length >= len(document) else b"m") + chunk


def parse_xfer_reply(reply: bytes) -> XferChunk:
    """``m``/``l`` and data (check for ``E NN`` and empty first)."""
    kind = reply[:1]
    if kind == b"m":
        if len(reply) == 1:
            raise RspError("qXfer reply 'm' without data (the read would never end)")
        return XferChunk(reply[1:], False)
    if kind == b"l":
        return XferChunk(reply[1:], True)
    raise RspError(f"qXfer reply is neither m nor l: {show(reply)}")
