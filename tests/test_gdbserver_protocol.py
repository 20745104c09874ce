"""The server in process, driven packet by packet by a raw client built on
kvmbench.rsp, with the session it serves in reach: interrupts, one client
at a time, detach and disconnect, a session shared with another driver."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kvmbench.engine.model import RunState, StopReason
from kvmbench.engine.session import Session
from kvmbench.gdbserver import GdbServer
from kvmbench.gdbserver.stub import GdbStub
from kvmbench.rsp.features import parse_qsupported_reply
from kvmbench.rsp.framing import INTERRUPT, encode_packet
from kvmbench.rsp.hexdata import from_hex, to_hex
from kvmbench.rsp.stops import Exited, Stopped, parse_stop_reply
from kvmbench.rsp.stream import Packet, PacketDecoder

REPLY_TIMEOUT = 20.0


class RawClient:
    """A minimal client: sends packets, acks replies, returns each reply's data."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=REPLY_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as gdb does
        self.decoder = PacketDecoder()
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(encode_packet(data))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in self.decoder.feed(data):
                if isinstance(event, Packet):
                    self.sock.sendall(b"+")
                    self.pending.append(event.data)
        return self.pending.pop(0)

    def ask(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(open_guest) -> Iterator:  # type: ignore[no-untyped-def]
    servers: list[GdbServer] = []
    clients: list[RawClient] = []

    def start(guest: str, *args: object, **options: object) -> tuple[Session, GdbServer, RawClient]:
        session = open_guest(guest, args)
        server = GdbServer(session, "127.0.0.1", 0, **options).start()  # type: ignore[arg-type]
        servers.append(server)
        client = RawClient(server.address)
        clients.append(client)
        return session, server, client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()
        server.session.pause()
        deadline = time.monotonic() + 5
        while server.session.state is RunState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)


def wait_until(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_qsupported_announces_what_the_stub_implements_and_nothing_else(serve) -> None:
    _, _, client = serve("hello")
    features = parse_qsupported_reply(client.ask(b"qSupported:swbreak+;hwbreak+"))
    assert features.packet_size is not None and features.packet_size >= 0x1000
    for name in ("QStartNoAckMode", "qXfer:features:read", "qXfer:exec-file:read",
                 "qXfer:threads:read", "swbreak", "hwbreak", "vContSupported"):
        assert features.supported(name), name
    assert not features.supported("ReverseContinue") and not features.supported("ReverseStep")
    # every announced packet is answered
    assert client.ask(b"qXfer:features:read:target.xml:0,100").startswith((b"m", b"l"))
    assert client.ask(b"vCont?").startswith(b"vCont;")
    assert set(GdbStub.implemented()) >= {"QStartNoAckMode", "qXfer:features:read"}


def test_reverse_execution_packets_are_unsupported(serve) -> None:
    _, _, client = serve("hello")
    assert client.ask(b"bc") == b""
    assert client.ask(b"bs") == b""


def test_interrupt_pauses_a_running_guest_and_the_stop_says_sigint(serve) -> None:
    session, _, client = serve("spin")
    client.send(b"vCont;c")
    assert wait_until(lambda: session.state is RunState.RUNNING)
    time.sleep(0.05)
    client.send_raw(INTERRUPT)
    reply = parse_stop_reply(client.reply())
    assert isinstance(reply, Stopped) and reply.signal == 2
    assert session.state is RunState.STOPPED
    assert session.last_stop is not None and session.last_stop.reason is StopReason.PAUSED
    rip = int.from_bytes(reply.registers[0x10], "little")
    assert rip == session.regs.rip


def test_interrupt_sent_right_after_continue_is_not_lost(serve) -> None:
    session, _, client = serve("spin")
    client.send_raw(encode_packet(b"c") + INTERRUPT)  # before the run can have begun
    reply = parse_stop_reply(client.reply())
    assert isinstance(reply, Stopped) and reply.signal == 2


def test_a_second_client_is_refused_while_one_is_attached(serve) -> None:
    session, server, client = serve("hello")
    assert client.ask(b"?").startswith(b"T05")
    other = RawClient(server.address)
    try:
        reply = other.ask(b"qSupported")
        assert reply.startswith(b"E.") and b"another debugger" in reply and b"one client" in reply
        with pytest.raises((ConnectionError, OSError)):
            other.ask(b"?")
    finally:
        other.close()
    assert client.ask(b"?").startswith(b"T05")  # the first one is undisturbed


def test_detach_removes_the_clients_requests_and_leaves_the_session_intact(serve) -> None:
    session, server, client = serve("fib", 8)
    fib = session.symbols.resolve("fib")
    mine = session.breakpoints.add("main")  # the notebook's own, say
    assert client.ask(b"Z0,%x,1" % fib) == b"OK"
    assert client.ask(b"Z1,%x,1" % (fib + 4)) == b"OK"
    assert client.ask(b"Z2,%x,8" % (session.regs.rsp - 64)) == b"OK"
    assert len(session.breakpoints) == 3 and len(session.watchpoints) == 1
    assert client.ask(b"D") == b"OK"
    assert wait_until(lambda: server.attached is None)
    assert [b.number for b in session.breakpoints] == [mine.number]
    assert len(session.watchpoints) == 0
    assert session.state is RunState.STOPPED
    # the next client gets the same session
    again = RawClient(server.address)
    try:
        assert again.ask(b"?").startswith(b"T05")
    finally:
        again.close()
    stop = session.cont()
    assert stop.reason is StopReason.BREAKPOINT and stop.breakpoint == mine.number


def test_a_client_that_vanishes_mid_run_leaves_the_guest_paused(serve) -> None:
    session, server, client = serve("spin")
    client.ask(b"Z0,%x,1" % session.symbols.resolve("main"))
    client.send(b"c")
    assert wait_until(lambda: session.state is RunState.RUNNING)
    client.close()
    assert wait_until(lambda: server.attached is None)
    assert session.state is RunState.STOPPED
    assert len(session.breakpoints) == 0


def test_continue_while_another_thread_runs_the_guest_gets_an_error(serve) -> None:
    session, _, client = serve("spin")
    runner = threading.Thread(target=session.cont)
    runner.start()
    try:
        assert wait_until(lambda: session.state is RunState.RUNNING)
        reply = client.ask(b"vCont;c")
        assert reply.startswith(b"E")
        assert client.ask(b"g").startswith(b"E")  # no reads of a running guest either
    finally:
        session.pause()
        runner.join(10)
    assert session.state is RunState.STOPPED


def test_the_notebooks_pause_ends_a_clients_run_with_a_stop_reply(serve) -> None:
    stops = []
    session, _, client = serve("spin", on_stop=stops.append)
    client.send(b"c")
    assert wait_until(lambda: session.state is RunState.RUNNING)
    session.pause()  # the notebook's stop button, from another thread
    reply = parse_stop_reply(client.reply())
    assert isinstance(reply, Stopped) and reply.signal == 2
    assert stops and stops[-1].reason is StopReason.PAUSED


def test_memory_and_registers_round_trip_through_the_session(serve) -> None:
    session, _, client = serve("counter", 3)
    address = session.symbols.resolve("counter")
    assert client.ask(b"M%x,4:%s" % (address, to_hex(b"\x11\x22\x33\x44"))) == b"OK"
    assert session.mem.read(address, 4) == b"\x11\x22\x33\x44"
    assert from_hex(client.ask(b"m%x,4" % address)) == b"\x11\x22\x33\x44"
    assert client.ask(b"X%x,2:" % address + b"}*") == b"OK"  # binary: the framing escapes both
    assert session.mem.read(address, 4) == b"}*\x33\x44"
    assert client.ask(b"P0=efbeadde00000000") == b"OK"  # rax
    assert session.regs.rax == 0xDEADBEEF
    g = from_hex(client.ask(b"g"))
    assert int.from_bytes(g[:8], "little") == 0xDEADBEEF
    assert int.from_bytes(g[16 * 8:17 * 8], "little") == session.regs.rip


def test_software_breakpoints_are_invisible_in_memory_reads(serve) -> None:
    session, _, client = serve("fib", 5)
    fib = session.symbols.resolve("fib")
    before = client.ask(b"m%x,8" % fib)
    assert client.ask(b"Z0,%x,1" % fib) == b"OK"
    assert client.ask(b"m%x,8" % fib) == before


def test_continue_to_exit_answers_w_with_the_exit_code(serve) -> None:
    session, _, client = serve("sort", 300)  # a usage error: exit code 64
    reply = parse_stop_reply(client.ask(b"c"))
    assert isinstance(reply, Exited) and reply.status == 64


def test_monitor_output_comes_in_o_packets_then_ok(serve) -> None:
    session, _, client = serve("fib", 5)
    client.send(b"qRcmd," + to_hex(b"trace fib"))
    text = b""
    while (reply := client.reply()) != b"OK":
        assert reply.startswith(b"O")
        text += from_hex(reply[1:])
    assert b"tracepoint 1" in text and b"fib" in text
    assert [b.tracepoint for b in session.breakpoints] == [True]
    assert client.ask(b"qRcmd," + to_hex(b"no such command")).startswith(b"E")
