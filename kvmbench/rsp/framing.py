"""Framing: ``$data#cs``, checksums, escaping, run-length encoding.

GDB manual, "Remote Protocol" > "Overview":

- a packet is ``$``, the packet data, ``#`` and a two-digit hex checksum,
  the sum of the data bytes modulo 256; notifications use ``%`` for ``$``;
- ``}`` (0x7d) escapes the next byte, which is sent xor 0x20; ``$``, ``#``,
  ``}`` and ``*`` must be escaped in binary data (``X``, ``qXfer``);
- a response may be run-length encoded: ``c*N`` stands for ``c`` followed
  by ``ord(N) - 29`` more copies of it; ``N`` must be printable and must
  not be ``#`` or ``$``;
- outside packets, ``+`` acknowledges a packet, ``-`` asks for it again
  (until no-ack mode is agreed, see ``QStartNoAckMode``), and the byte 0x03
  asks a running target to stop.

Decoding undoes escapes and run-length encoding in one pass, as a reader
must (a ``*`` repeats the byte before it, escaped or not). Encoding always
escapes the four special bytes: text packets never contain them, so this
is right for binary and text packets alike.
"""

from __future__ import annotations

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import show

ACK = b"+"
NACK = b"-"
#: The interrupt request: sent outside any packet (GDB manual, "Interrupts").
INTERRUPT = b"\x03"
PACKET_START = ord("$")
NOTIFICATION_START = ord("%")
PACKET_END = ord("#")
ESCAPE = ord("}")
REPEAT = ord("*")
#: Bytes that must be escaped inside packet data.
SPECIAL = frozenset(b"$#}*")
#: ``ord(N) - RLE_BIAS`` is the repeat count of ``*N``.
RLE_BIAS = 29
#: Shortest run worth encoding: ``c*N`` (3 bytes) stands for 1 + count bytes,
#: and count chars below ``' '`` (count 3) are not printable.
RLE_MIN_REPEAT = 3
#: Largest count: ``~`` (126) is the last printable character.
RLE_MAX_REPEAT = 126 - RLE_BIAS
#: Counts whose character would confuse a reader: ``#`` and ``$`` are
#: forbidden by the manual; ``}``, ``*``, ``+`` and ``-`` are avoided so no
#: decoder can mistake the count for an escape, a repeat or an ack.
_RLE_AVOID = frozenset(c - RLE_BIAS for c in b"#$}*+-")


def checksum(data: bytes) -> int:
    """The modulo-256 sum of ``data`` (the bytes between ``$`` and ``#``)."""
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """``data`` with ``$ # } *`` sent as ``}`` and the byte xor 0x20."""
    if not SPECIAL.intersection(data):
        return bytes(data)
    out = bytearray()
    for byte in data:
        if byte in SPECIAL:
            out += bytes((ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape` (no run-length decoding)."""
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == ESCAPE:
            following = next(it, None)
            if following is None:
                raise RspError("packet data ends in the escape byte '}'")
            out.append(following ^ 0x20)
        else:
            out.append(byte)
    return bytes(out)


def rle_encode(data: bytes) -> bytes:
    """Run-length encode already escaped packet data.

    Only runs of plain bytes are encoded, never escape pairs, so the
    result decodes the same way in every reader. Each run becomes
    ``c*N`` pieces (``c`` plus up to :data:`RLE_MAX_REPEAT` copies).
    """
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte == ESCAPE:
            out += data[i : i + 2]
            i += 2
            continue
        run = 1
        while i + run < n and data[i + run] == byte:
            run += 1
        i += run
        while run > 0:
            repeat = min(run - 1, RLE_MAX_REPEAT)
            while repeat in _RLE_AVOID:
                repeat -= 1
            if repeat >= RLE_MIN_REPEAT:
                out += bytes((byte, REPEAT, repeat + RLE_BIAS))
                run -= repeat + 1
            else:
                out += bytes((byte,)) * run
                run = 0
    return bytes(out)


def decode_payload(raw: bytes) -> bytes:
    """Packet data as received (between ``$`` and ``#``) to the bytes meant:
    escapes and run-length encoding undone in one pass."""
    if ESCAPE not in raw and REPEAT not in raw:
        return bytes(raw)
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == ESCAPE:
            if i + 1 >= n:
                raise RspError("packet data ends in the escape byte '}'")
            out.append(raw[i + 1] ^ 0x20)
            i += 2
        elif byte == REPEAT:
            if not out:
                raise RspError("packet data starts with a repeat '*' (nothing to repeat)")
            if i + 1 >= n:
                raise RspError("packet data ends in a repeat '*' without a count")
            count_char = raw[i + 1]
            if not 0x20 <= count_char <= 0x7E:
                raise RspError(f"repeat count {count_char:#04x} is not a printable character")
            out += bytes((out[-1],)) * (count_char - RLE_BIAS)
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def encode_packet(data: bytes, *, rle: bool = False) -> bytes:
    """``$data#cs`` with ``data`` escaped (and run-length encoded if ``rle``,
    which a stub may do for its replies)."""
    body = escape(data)
    if rle:
        body = rle_encode(body)
    return b"$%s#%02x" % (body, checksum(body))


def encode_notification(data: bytes) -> bytes:
    """``%data#cs``: an asynchronous notification (GDB manual, "Notification Packets")."""
    body = escape(data)
    return b"%%%s#%02x" % (body, checksum(body))


def parse_checksum(digits: bytes) -> int:
    """The two hex digits after ``#``."""
    if len(digits) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
        raise RspError(f"checksum {show(digits)} is not two hex digits")
    return int(digits, 16)
