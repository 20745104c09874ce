"""The stream decoder: packets, acks, interrupts, and what it says about
bytes it cannot take, however the input is split."""

from __future__ import annotations

from kvmbench.rsp.framing import encode_notification, encode_packet
from kvmbench.rsp.stream import (
    Ack,
    BadPacket,
    Garbage,
    Interrupt,
    Nack,
    Notification,
    Packet,
    PacketDecoder,
    StreamEvent,
)


def feed_bytewise(data: bytes, **kw: object) -> list[StreamEvent]:
    decoder = PacketDecoder(**kw)  # type: ignore[arg-type]
    events: list[StreamEvent] = []
    for i in range(len(data)):
        events += decoder.feed(data[i : i + 1])
    return events


def test_a_packet_and_acks_come_out_in_order() -> None:
    events = PacketDecoder().feed(b"+$OK#9a-")
    assert events == [Ack(), Packet(b"OK", b"OK"), Nack()]


def test_split_input_gives_the_same_events() -> None:
    stream = b"+" + encode_packet(b"T05thread:p01.01;") + b"\x03" + encode_packet(b"0" * 50, rle=True)
    assert feed_bytewise(stream) == PacketDecoder().feed(stream)


def test_an_incomplete_packet_waits_for_the_rest() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(b"$O") == []
    assert decoder.feed(b"K#9") == []
    assert decoder.pending == 5
    assert decoder.feed(b"a") == [Packet(b"OK", b"OK")]
    assert decoder.pending == 0


def test_interrupt_byte_outside_packets() -> None:
    assert PacketDecoder().feed(b"\x03") == [Interrupt()]


def test_binary_data_inside_a_packet_is_not_an_interrupt_or_ack() -> None:
    framed = encode_packet(b"X0,3:\x03+-")
    assert PacketDecoder().feed(framed) == [Packet(b"X0,3:\x03+-", framed[1:-3])]


def test_garbage_between_packets_is_reported_and_skipped() -> None:
    events = PacketDecoder().feed(b"hello$OK#9aworld")
    assert events == [Garbage(b"hello"), Packet(b"OK", b"OK"), Garbage(b"world")]


def test_a_bad_checksum_is_reported_and_the_next_packet_still_read() -> None:
    events = PacketDecoder().feed(b"$OK#00$OK#9a")
    assert isinstance(events[0], BadPacket) and "checksum" in events[0].reason
    assert events[1] == Packet(b"OK", b"OK")


def test_no_ack_mode_may_skip_checksum_verification() -> None:
    assert PacketDecoder(verify_checksums=False).feed(b"$OK#00") == [Packet(b"OK", b"OK")]


def test_non_hex_checksum_is_bad_and_its_bytes_are_looked_at_again() -> None:
    events = PacketDecoder().feed(b"$OK#+$OK#9a")
    assert isinstance(events[0], BadPacket)
    assert Packet(b"OK", b"OK") in events


def test_a_new_dollar_cuts_a_packet_short() -> None:
    events = PacketDecoder().feed(b"$trunc$OK#9a")
    assert isinstance(events[0], BadPacket) and "cut short" in events[0].reason
    assert events[1] == Packet(b"OK", b"OK")


def test_an_undecodable_payload_is_a_bad_packet() -> None:
    events = PacketDecoder().feed(b"$*a#8b")
    assert len(events) == 1 and isinstance(events[0], BadPacket) and "repeat" in events[0].reason


def test_an_oversized_packet_is_dropped_without_holding_its_bytes() -> None:
    decoder = PacketDecoder(max_packet=100)
    events = decoder.feed(b"$" + b"a" * 200)
    assert isinstance(events[0], BadPacket) and "longer than 100" in events[0].reason
    assert decoder.pending == 0
    assert decoder.feed(b"#00$OK#9a")[-1] == Packet(b"OK", b"OK")


def test_notifications_are_their_own_event() -> None:
    assert PacketDecoder().feed(encode_notification(b"Stop:T05")) == [Notification(b"Stop:T05")]
