"""Hypothesis throws malformed and hostile bytes at the server: it never
crashes or hangs, the next client is served, and the session it serves is
intact (stopped, no requests left behind, registers where they were)."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmbench.engine.model import RunState
from kvmbench.gdbserver import GdbServer
from kvmbench.rsp.framing import encode_packet
from kvmbench.rsp.stream import Packet, PacketDecoder

# Every packet kind the server knows (and some it does not), to be given
# hostile tails; run packets only with tails that cannot parse (a valid
# 'c' would run the guest, which is not what this test is about).
PREFIXES = [
    b"qSupported:", b"QStartNoAckMode", b"?", b"qAttached", b"qC", b"qfThreadInfo",
    b"qsThreadInfo", b"qThreadExtraInfo,", b"qXfer:features:read:target.xml:",
    b"qXfer:exec-file:read::", b"qXfer:threads:read::", b"qXfer:", b"qRcmd,", b"qSymbol:",
    b"qHostInfo", b"qProcessInfo", b"qRegisterInfo", b"QEnableErrorStrings", b"H", b"Hg", b"Hc",
    b"T", b"g", b"G", b"p", b"P", b"m", b"M", b"X", b"Z0,", b"Z1,", b"Z2,", b"Z3,", b"Z4,", b"Z9,",
    b"z0,", b"z2,", b"vCont?", b"vMustReplyEmpty", b"vFile:open:", b"bc", b"bs", b"qTStatus", b"",
]
RUN_PREFIXES = [b"c", b"s", b"C", b"S", b"vCont;", b"vCont;c:", b"vCont;s:"]
HEX = st.text("0123456789abcdef", min_size=1, max_size=17).map(str.encode)
NUMBERS = st.sampled_from([b"0", b"1", b"ffffffffffffffff", b"10000000000000000", b"7fffffff",
                           b"-1", b"", b"fffff000", b"100000"])
TAIL = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(HEX, NUMBERS, st.sampled_from([b",", b":", b";", b"=", b"}", b"*", b"#", b"$"])),
             max_size=8).map(b"".join),
)
NOT_HEX = st.binary(min_size=1, max_size=16).filter(
    lambda b: any(c not in b"0123456789abcdefABCDEF" for c in b))


@st.composite
def packet(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.sampled_from(PREFIXES)) + draw(TAIL)
    return draw(st.sampled_from(RUN_PREFIXES)) + draw(NOT_HEX)


@st.composite
def chunk(draw: st.DrawFn) -> bytes:
    """What goes on the wire: framed packets (some with bad checksums or
    cut short), interrupts, acks, garbage, and floods of bytes."""
    kind = draw(st.sampled_from(["packet", "packet", "packet", "badsum", "cut", "raw", "interrupt",
                                 "ack", "huge", "rle"]))
    if kind == "packet":
        return encode_packet(draw(packet()))
    if kind == "badsum":
        framed = encode_packet(draw(packet()))
        return framed[:-2] + (b"zz" if draw(st.booleans()) else b"%02x" % ((framed[-2] + 1) % 256))
    if kind == "cut":
        return encode_packet(draw(packet()))[: -draw(st.integers(1, 3))]
    if kind == "interrupt":
        return b"\x03"
    if kind == "ack":
        return draw(st.sampled_from([b"+", b"-", b"---", b"+-+"]))
    if kind == "huge":
        return b"$" + b"m" * draw(st.integers(1, 1 << 16)) + b"#00"
    if kind == "rle":  # a run-length bomb: each '*~' repeats 97 times
        body = b"m0,10" + b"*~" * draw(st.integers(1, 200))
        return b"$" + body + b"#%02x" % (sum(body) & 0xFF)
    return draw(st.binary(max_size=256))


def _wait(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _ask(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(encode_packet(data))
        decoder = PacketDecoder()
        while True:
            received = sock.recv(65536)
            assert received, "the server closed the connection without answering"
            for event in decoder.feed(received):
                if isinstance(event, Packet):
                    return event.data


@pytest.mark.slow
def test_hostile_bytes_never_crash_or_hang_the_server_nor_harm_the_session(open_guest) -> None:
    session = open_guest("fib", [10])
    server = GdbServer(session, "127.0.0.1", 0).start()
    registers = session.regs.snapshot()
    try:
        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(chunk(), min_size=1, max_size=10))
        def attack(chunks: list[bytes]) -> None:
            served = server.clients_served
            with socket.create_connection(server.address, timeout=10) as sock:
                for data in chunks:
                    try:
                        sock.sendall(data)
                    except OSError:
                        break  # the server hung up on us: allowed
            # the server lets go of the connection and serves the next client
            assert _wait(lambda: server.clients_served > served and server.attached is None), \
                "the server still holds a closed client"
            assert _ask(server.address, b"?").startswith(b"T05")
            assert _wait(lambda: server.clients_served > served + 1 and server.attached is None)
            assert session.state is RunState.STOPPED
            assert len(session.breakpoints) == 0 and len(session.watchpoints) == 0
            for name, value in session.regs.snapshot().items():  # undo valid P/G writes
                if value != registers[name]:
                    session.regs[name] = registers[name]

        attack()
    finally:
        server.stop()
    assert session.state is RunState.STOPPED
    assert session.regs.snapshot() == registers
