"""Random and hostile bytes against the stream decoder and every packet
parser: they return or raise RspError, nothing else, never hang, and the
decoder's work stays linear however its input is split."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmbench.errors import RspError
from kvmbench.rsp import breakpoints, features, framing, memory, registers, replies, resume, stops, threads, xfer
from kvmbench.rsp.layout import X86_64
from kvmbench.rsp.stream import BadPacket, Packet, PacketDecoder
from kvmbench.rsp.target_xml import parse_target_xml

# Bytes weighted towards the protocol's own: hostile input looks almost right.
protocol_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"$", b"#", b"}", b"*", b"+", b"-", b"\x03", b"%", b":", b";", b",", b"p", b"."]),
        st.sampled_from([b"T05", b"thread:", b"E01", b"OK", b"m", b"l", b"ff", b"00", b"-1", b"watch:", b"vCont"]),
        st.binary(min_size=1, max_size=8),
    ),
    max_size=60,
).map(b"".join)

PARSERS: list[Callable[[bytes], object]] = [
    framing.decode_payload,
    framing.unescape,
    framing.parse_checksum,
    stops.parse_stop_reply,
    threads.parse_thread_id,
    threads.parse_thread_list_reply,
    threads.parse_set_thread,
    threads.parse_current_thread_reply,
    threads.parse_thread_alive,
    features.parse_features,
    features.parse_qsupported,
    xfer.parse_xfer_read,
    xfer.parse_xfer_reply,
    memory.parse_read_memory,
    memory.parse_memory_reply,
    memory.parse_write_memory,
    memory.parse_write_binary,
    breakpoints.parse_breakpoint,
    resume.parse_vcont,
    resume.parse_vcont_actions_reply,
    resume.parse_continue_or_step,
    registers.parse_read_register,
    registers.parse_write_register,
    replies.parse_error_reply,
]


def parse_g_reply(data: bytes) -> object:
    return registers.parse_registers_reply(data, X86_64)


def parse_p_reply(data: bytes) -> object:
    return registers.parse_register_reply(data, X86_64.get("rip"))


def parse_packet_size(data: bytes) -> object:
    return features.parse_qsupported_reply(data).packet_size


def parse_self_including_xml(data: bytes) -> object:
    return parse_target_xml(data, lambda href: data)


PARSERS += [parse_g_reply, parse_p_reply, parse_packet_size, parse_self_including_xml]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(protocol_bytes, st.binary(max_size=200)))
def test_parsers_raise_only_rsp_error(data: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(data)
        except RspError as e:
            assert "\n" not in str(e), parse.__name__


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(protocol_bytes, st.binary(max_size=300)), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_decoder_gives_the_same_events_however_input_is_split(data: bytes, cuts: list[int]) -> None:
    whole = PacketDecoder().feed(data)
    decoder = PacketDecoder()
    pieces: list[object] = []
    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in zip(edges, edges[1:]):
        pieces += decoder.feed(data[start:end])
    # Garbage may come out in several pieces when the input is split.
    def merged(events: list[object]) -> list[object]:
        out: list[object] = []
        for event in events:
            if out and type(event).__name__ == "Garbage" == type(out[-1]).__name__:
                out[-1] = type(event)(out[-1].data + event.data)  # type: ignore[attr-defined]
            else:
                out.append(event)
        return out
    assert merged(pieces) == merged(whole)


@settings(max_examples=500, deadline=None)
@given(garbage=st.one_of(protocol_bytes, st.binary(max_size=300)))
def test_decoder_recovers_for_the_next_good_packet(garbage: bytes) -> None:
    events = PacketDecoder(max_packet=256).feed(garbage + framing.encode_packet(b"OK"))
    assert events[-1] == Packet(b"OK", b"OK")
    assert all(isinstance(e, BadPacket) and e.reason and "\n" not in e.reason or not isinstance(e, BadPacket) for e in events)


@pytest.mark.parametrize("hostile", [
    b"$" + b"a" * 200_000,                 # a packet that never ends
    b"}" * 200_000,                        # escapes outside any packet
    b"$" + b"}" * 200_000 + b"#00",        # escapes inside one
    b"$a" + b"*~" * 100_000 + b"#00",      # the largest repeat counts
    b"x" * 200_000,                        # plain garbage
])  # fmt: skip
def test_decoder_is_linear_on_hostile_input_fed_byte_by_byte(hostile: bytes) -> None:
    # A generous bound, not a benchmark: quadratic work on 200 kB would
    # take minutes; linear work takes about a second.
    decoder = PacketDecoder(max_packet=1 << 20)
    start = time.monotonic()
    for i in range(len(hostile)):
        decoder.feed(hostile[i : i + 1])
    assert time.monotonic() - start < 30
    assert decoder.pending <= len(hostile)


def test_repeat_expansion_is_bounded_by_the_count_limit() -> None:
    raw = b"a" + b"*~" * 1000
    assert len(framing.decode_payload(raw)) == 1 + 97 * 1000
