"""An incremental decoder of the byte stream either side of a connection reads.

Feed it whatever ``recv`` returned; it returns what the bytes completed:
packets, notifications, acks, nacks, interrupts, and, saying so instead of
raising, garbage between packets and packets that cannot be taken (a bad
checksum, broken escapes, a packet cut short by a new ``$``, one longer
than the limit). Work is linear in the bytes fed, however they are split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.framing import (
    NOTIFICATION_START,
    PACKET_START,
    checksum,
    decode_payload,
    parse_checksum,
)


@dataclass(frozen=True, slots=True)
class Packet:
    """A packet whose checksum matched: ``data`` decoded, ``raw`` as sent."""

    data: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class Notification:
    """A ``%name:data#cs`` notification (non-stop mode's ``%Stop``)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """``+``: the peer took our last packet."""


@dataclass(frozen=True, slots=True)
class Nack:
    """``-``: the peer asks for our last packet again."""


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The 0x03 byte: stop the running target."""


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes outside any packet that mean nothing in the protocol."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BadPacket:
    """A framed packet that cannot be taken; ``reason`` says why in one line.
    A peer in ack mode answers it with a nack."""

    raw: bytes
    reason: str


StreamEvent = Packet | Notification | Ack | Nack | Interrupt | Garbage | BadPacket

#: Default limit on one packet's framed data (gdb's own packets are far smaller).
DEFAULT_MAX_PACKET = 1 << 20

_ACK, _NACK, _INTERRUPT = Ack(), Nack(), Interrupt()
# Where something other than garbage may begin, outside a packet.
_MEANINGFUL = re.compile(rb"[$%+\-\x03]")
# Inside a packet: its end, or a new start that cuts it short.
_PACKET_STOP = re.compile(rb"[#$]")


class PacketDecoder:
    """Turns received bytes into :data:`StreamEvent` s, in order.

    ``max_packet`` bounds the data of one packet: a longer one is reported
    as a :class:`BadPacket` and the decoder looks for the next ``$``.
    ``verify_checksums=False`` takes packets whatever their checksum (for
    no-ack mode, where the manual lets a reader skip the check).
    """

    def __init__(self, *, max_packet: int = DEFAULT_MAX_PACKET, verify_checksums: bool = True) -> None:
        self.max_packet = max_packet
        self.verify_checksums = verify_checksums
        self._buf = bytearray()
        # While inside a packet: its kind ('$' or '%'), and how far the
        # search for its end has looked (so split input is not rescanned).
        self._kind: int | None = None
        self._scanned = 0

    @property
    def pending(self) -> int:
        """Bytes held back: the start of a packet not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take ``data``; return the events it completed."""
        self._buf += data
        events: list[StreamEvent] = []
        buf = self._buf
        pos = 0
        while pos < len(buf):
            if self._kind is None:
                pos = self._outside(buf, pos, events)
            else:
                new_pos = self._inside(buf, pos, events)
                if new_pos is None:
                    break
                pos = new_pos
        del buf[:pos]
        if self._kind is not None:
            self._scanned -= pos
        return events

    def _outside(self, buf: bytearray, pos: int, events: list[StreamEvent]) -> int:
        match = _MEANINGFUL.search(buf, pos)
        end = match.start() if match else len(buf)
        if end > pos:
            events.append(Garbage(bytes(buf[pos:end])))
        if match is None:
            return end
        byte = buf[end]
        if byte == PACKET_START or byte == NOTIFICATION_START:
            self._kind = byte
            self._scanned = end + 1
            return end
        events.append(_ACK if byte == 0x2B else _NACK if byte == 0x2D else _INTERRUPT)
        return end + 1

    def _inside(self, buf: bytearray, pos: int, events: list[StreamEvent]) -> int | None:
        """Finish the packet starting at ``pos`` if its bytes are all here;
        return where the next event starts, or None to wait for more."""
        match = _PACKET_STOP.search(buf, self._scanned)
        if match is None:
            self._scanned = len(buf)
            if len(buf) - pos - 1 > self.max_packet:
                events.append(BadPacket(bytes(buf[pos : pos + 64]), f"packet longer than {self.max_packet} bytes"))
                self._kind = None
                return len(buf)
            return None
        stop = match.start()
        if buf[stop] == PACKET_START:
            # A new packet began before this one ended: the peer gave up on it.
            events.append(BadPacket(bytes(buf[pos:stop]), "packet cut short by a new '$'"))
            self._kind = None
            return stop
        self._scanned = stop
        if stop + 3 > len(buf):
            return None
        raw = bytes(buf[pos + 1 : stop])
        digits = bytes(buf[stop + 1 : stop + 3])
        kind, self._kind = self._kind, None
        if stop - pos - 1 > self.max_packet:
            events.append(BadPacket(raw[:64], f"packet longer than {self.max_packet} bytes"))
            return stop + 3
        try:
            expected = parse_checksum(digits)
        except RspError as e:
            events.append(BadPacket(raw, str(e)))
            # The two bytes may start the next packet; look at them again.
            return stop + 1
        actual = checksum(raw)
        if self.verify_checksums and actual != expected:
            events.append(BadPacket(raw, f"bad checksum {expected:02x}, the data sums to {actual:02x}"))
            return stop + 3
        try:
            data = decode_payload(raw)
        except RspError as e:
            events.append(BadPacket(raw, str(e)))
            return stop + 3
        events.append(Packet(data, raw) if kind == PACKET_START else Notification(data))
        return stop + 3
