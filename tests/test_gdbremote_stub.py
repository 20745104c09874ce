"""The client against a scripted stub (tests/gdbstub_scripted.py): the
protocol it speaks to a well-behaved stub, and clear one-line errors,
never a hang, when a stub misbehaves: malformed packets, bad checksums,
a dropped connection, silence, refused Z packets."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmbench.backends.gdbremote import GdbRemoteClient, TargetDisconnected, TargetStop
from kvmbench.errors import (
    KvmbenchError,
    RemoteConnectionError,
    RemoteError,
    RemoteProtocolError,
    RemoteRefused,
    RemoteTimeout,
    SessionStateError,
    UsageError,
)
from kvmbench.rsp.breakpoints import BreakpointType
from kvmbench.rsp.framing import encode_packet
from kvmbench.rsp.layout import X86_64, x86_64_layout
from kvmbench.rsp.resume import VContAction
from kvmbench.rsp.threads import ThreadId

from gdbstub_scripted import HANG_UP, MEMORY_BASE, Raw, ScriptedStub

TIMEOUT = 1.0  # for replies: a silent stub must fail fast, well inside pytest's timeout


@pytest.fixture
def clients() -> Iterator[list[GdbRemoteClient]]:
    opened: list[GdbRemoteClient] = []
    yield opened
    for client in opened:
        client.close()


def attach(stub: ScriptedStub, clients: list[GdbRemoteClient], **kw: object) -> GdbRemoteClient:
    client = GdbRemoteClient.connect(stub.address, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
    clients.append(client)
    return client


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text
    return text


# --- a well-behaved stub ---------------------------------------------------------------


def test_handshake_agrees_no_ack_and_reads_the_description(stub_factory, clients) -> None:
    stub = stub_factory()
    client = attach(stub, clients)
    assert client.no_ack
    assert client.layout == X86_64
    assert client.vcont_actions == frozenset("cCsS")
    assert isinstance(client.initial_stop, TargetStop) and client.initial_stop.thread == ThreadId(1, 1)
    assert stub.log[:2] == [
        b"qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+;xmlRegisters=i386",
        b"QStartNoAckMode",
    ]
    assert stub.log[2].startswith(b"qXfer:features:read:target.xml:0,")
    assert stub.log[-2:] == [b"vCont?", b"?"]


def test_registers_by_name_through_p_and_g(stub_factory, clients) -> None:
    stub = stub_factory()
    stub.regs.update(rip=0x100040, rsp=0x80000, xmm3=1 << 100)
    client = attach(stub, clients)
    assert client.read_register("rip") == 0x100040
    assert stub.log[-1] == b"p10"
    values = client.read_registers()
    assert values["rsp"] == 0x80000 and values["xmm3"] == 1 << 100
    client.write_register("rax", 0x1234)
    assert stub.regs["rax"] == 0x1234 and stub.log[-1] == b"P0=3412000000000000"


def test_register_falls_back_to_g_and_G_without_p_and_P(stub_factory, clients) -> None:
    stub = stub_factory(packet_p=lambda self, packet: b"", packet_P=lambda self, packet: b"")
    stub.regs["rbx"] = 7
    client = attach(stub, clients)
    assert client.read_register("rbx") == 7
    client.write_register("rcx", 9)
    assert stub.regs["rcx"] == 9 and stub.log[-1].startswith(b"G")


def test_memory_reads_and_binary_writes_in_packet_sized_chunks(stub_factory, clients) -> None:
    stub = stub_factory(packet_qSupported=lambda self, packet: b"PacketSize=40;QStartNoAckMode+;qXfer:features:read+")
    client = attach(stub, clients)
    assert client.read_memory(MEMORY_BASE + 10, 100) == bytes(stub.memory[10:110])
    assert sum(p.startswith(b"m") for p in stub.log) > 3  # 0x40 bytes a packet: several
    client.write_memory(MEMORY_BASE, b"$#}*" * 20)
    assert stub.memory[:80] == b"$#}*" * 20 and client.has_binary_write


def test_memory_writes_fall_back_to_M_without_X(stub_factory, clients) -> None:
    stub = stub_factory(packet_X=lambda self, packet: b"")
    client = attach(stub, clients)
    client.write_memory(MEMORY_BASE + 4, b"\x01\x02")
    assert client.has_binary_write is False
    assert stub.memory[4:6] == b"\x01\x02" and stub.log[-1] == b"M1004,2:0102"


def test_breakpoints_are_accepted_and_removed(stub_factory, clients) -> None:
    stub = stub_factory()
    client = attach(stub, clients)
    assert client.insert_breakpoint(BreakpointType.SOFTWARE, 0x100040)
    assert client.insert_breakpoint(BreakpointType.ACCESS_WATCH, 0x2000, 8)
    assert stub.log[-2:] == [b"Z0,100040,1", b"Z4,2000,8"]
    assert client.remove_breakpoint(BreakpointType.SOFTWARE, 0x100040)
    assert not client.remove_breakpoint(BreakpointType.SOFTWARE, 0x100040)  # E01: not there


def test_continue_and_step_go_through_vcont_with_thread_ids(stub_factory, clients) -> None:
    stub = stub_factory()
    client = attach(stub, clients)
    stub.regs["rip"] = 0x100041
    assert client.cont() == TargetStop(5, ThreadId(1, 1))
    # A step's stop always names the pc: this stub does not send it, so it is read.
    assert client.step() == TargetStop(5, ThreadId(1, 1), registers={"rip": 0x100041})
    assert stub.log[-3:] == [b"vCont;c", b"vCont;s:p1.1", b"p10"]


def test_without_vcont_resume_selects_the_thread_with_Hc(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont_query=lambda self, packet: b"")
    client = attach(stub, clients)
    client.step(ThreadId(2, 1))
    assert stub.log[-3:] == [b"Hcp1.2", b"s", b"p10"]


def test_threads_are_listed_across_qs_replies(stub_factory, clients) -> None:
    replies = iter([b"mp1.2,p1.3", b"mp1.4", b"l"])
    stub = stub_factory(
        packet_qfThreadInfo=lambda self, packet: b"mp1.1", packet_qsThreadInfo=lambda self, packet: next(replies)
    )
    client = attach(stub, clients)
    assert client.threads() == tuple(ThreadId(i, 1) for i in range(1, 5))


def test_expedited_registers_and_watch_reasons_are_typed(stub_factory, clients) -> None:
    stub = stub_factory(stop_reply=lambda self: b"T0510:4000100000000000;awatch:2000;thread:p1.1;hwbreak:;")
    client = attach(stub, clients)
    stop = client.cont()
    assert isinstance(stop, TargetStop)
    assert stop.registers == {"rip": 0x100040} and stop.hwbreak and stop.is_trap
    assert stop.watch is not None and stop.watch.address == 0x2000 and stop.watch.kind.value == "awatch"


def test_console_output_reaches_the_callback_while_running(stub_factory, clients) -> None:
    def vcont(self: ScriptedStub, packet: bytes) -> Raw:
        return Raw(encode_packet(b"O" + b"hi\n".hex().encode()) + encode_packet(self.stop_reply()))

    stub = stub_factory(packet_vCont=vcont)
    printed: list[bytes] = []
    client = attach(stub, clients, on_console=printed.append)
    assert isinstance(client.cont(), TargetStop) and printed == [b"hi\n"]


def test_interrupt_from_another_thread_stops_the_wait(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont=lambda self, packet: None)  # runs until interrupted
    client = attach(stub, clients)
    client.resume([VContAction("c")])
    threading.Timer(0.2, client.interrupt).start()
    stop = client.wait(timeout=10)
    assert isinstance(stop, TargetStop) and stop.is_interrupt


def test_a_stub_without_description_gets_gdbs_default_layout(stub_factory, clients) -> None:
    stub = stub_factory(packet_qSupported=lambda self, packet: b"PacketSize=1000")
    client = attach(stub, clients)
    assert client.target_xml is None and client.layout == x86_64_layout(segments=False)
    assert not client.no_ack and b"+" in stub.received


# --- misbehaving stubs: clear errors, no hang --------------------------------------------


def ack_mode_stub(stub_factory: Callable[..., ScriptedStub]) -> ScriptedStub:
    return stub_factory(packet_qSupported=lambda self, packet: b"PacketSize=1000;qXfer:features:read+")


def test_a_bad_checksum_is_nacked_and_the_resent_reply_taken(stub_factory, clients) -> None:
    stub = ack_mode_stub(stub_factory)
    client = attach(stub, clients)
    assert not client.no_ack
    stub.corrupt = 1
    stub.received.clear()
    assert client.read_memory(MEMORY_BASE, 4) == bytes(stub.memory[:4])
    assert stub.received.count(b"-") == 1


def test_a_stub_that_keeps_sending_bad_checksums_is_given_up(stub_factory, clients) -> None:
    stub = ack_mode_stub(stub_factory)
    client = attach(stub, clients)
    stub.corrupt = 100
    with pytest.raises(RemoteProtocolError, match="broken packet while waiting for reply to 'm1000,4': bad checksum") as error:
        client.read_memory(MEMORY_BASE, 4)
    one_line(error.value)


def test_our_packet_is_resent_when_the_stub_nacks_it(stub_factory, clients) -> None:
    nacked = []

    def packet_g(self: ScriptedStub, packet: bytes) -> bytes | Raw:
        if not nacked:
            nacked.append(packet)
            return Raw(b"-")
        return registers_reply(self)

    stub = stub_factory(packet_g=packet_g)
    client = attach(stub, clients)
    assert client.read_registers()["rip"] == 0
    assert stub.log.count(b"g") == 2


def registers_reply(stub: ScriptedStub) -> bytes:
    return ScriptedStub.packet_g(stub, b"g")  # type: ignore[return-value]


def test_bad_checksums_in_no_ack_mode_are_a_clear_error(stub_factory, clients) -> None:
    stub = stub_factory(packet_m=lambda self, packet: Raw(b"$abcd#00"))
    client = attach(stub, clients)
    with pytest.raises(RemoteProtocolError, match=r"m1000,2.*bad checksum 00"):
        client.read_memory(0x1000, 2)


def test_a_malformed_reply_is_a_protocol_error_naming_the_packet(stub_factory, clients) -> None:
    stub = stub_factory(packet_m=lambda self, packet: b"zz")
    client = attach(stub, clients)
    with pytest.raises(RemoteProtocolError, match="malformed reply to 'm1000,1'") as error:
        client.read_memory(0x1000, 1)
    one_line(error.value)


def test_a_malformed_stop_reply_is_a_protocol_error(stub_factory, clients) -> None:
    stub = stub_factory(stop_reply=lambda self: b"T5thread")
    with pytest.raises(RemoteProtocolError, match="malformed reply to '\\?'"):
        attach(stub, clients)


def test_a_malformed_target_description_is_a_protocol_error(stub_factory, clients) -> None:
    stub = stub_factory(target_xml=lambda self: b"<target><feature")
    with pytest.raises(RemoteProtocolError, match="target description is broken"):
        attach(stub, clients)


def test_a_dropped_connection_during_a_request_is_a_connection_error(stub_factory, clients) -> None:
    stub = stub_factory(packet_g=lambda self, packet: HANG_UP)
    client = attach(stub, clients)
    with pytest.raises(RemoteConnectionError, match="closed the connection") as error:
        client.read_registers()
    one_line(error.value)
    with pytest.raises(RemoteConnectionError):
        client.read_register("rip")


def test_a_dropped_connection_while_running_ends_the_wait(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont=lambda self, packet: HANG_UP)
    client = attach(stub, clients)
    assert client.cont(timeout=10) == TargetDisconnected()
    with pytest.raises(RemoteConnectionError, match="closed"):
        client.read_registers()


def test_a_silent_stub_times_out(stub_factory, clients) -> None:
    stub = stub_factory(packet_g=lambda self, packet: None)
    client = attach(stub, clients)
    start = time.monotonic()
    with pytest.raises(RemoteTimeout, match="no reply to 'g' in time") as error:
        client.read_registers()
    assert time.monotonic() - start < TIMEOUT + 2
    one_line(error.value)


def test_a_stub_silent_in_the_handshake_times_out(stub_factory) -> None:
    stub = stub_factory(packet_qSupported=lambda self, packet: None)
    with pytest.raises(RemoteTimeout, match="qSupported"):
        GdbRemoteClient.connect(stub.address, timeout=0.3)


def test_waiting_on_a_running_target_can_time_out_and_be_resumed(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont=lambda self, packet: None)
    client = attach(stub, clients)
    client.resume([VContAction("c")])
    with pytest.raises(RemoteTimeout, match="stop reply"):
        client.wait(timeout=0.2)
    assert client.running
    client.interrupt()
    assert isinstance(client.wait(timeout=5), TargetStop)


def test_a_stub_that_refuses_z_packets(stub_factory, clients) -> None:
    def packet_Z(self: ScriptedStub, packet: bytes) -> bytes:
        return b"E0e" if packet.startswith(b"Z0") else b""

    stub = stub_factory(packet_Z=packet_Z)
    client = attach(stub, clients)
    assert client.insert_breakpoint(BreakpointType.SOFTWARE, 0x100040) is False
    assert client.insert_breakpoint(BreakpointType.HARDWARE, 0x100040) is False
    assert client.unsupported_breakpoints == {BreakpointType.HARDWARE}
    assert client.read_register("rip") == 0  # the connection goes on


def test_a_z_reply_that_is_neither_ok_nor_error(stub_factory, clients) -> None:
    stub = stub_factory(packet_Z=lambda self, packet: b"maybe")
    client = attach(stub, clients)
    with pytest.raises(RemoteProtocolError, match="neither OK nor an error"):
        client.insert_breakpoint(BreakpointType.SOFTWARE, 0x100040)


def test_refused_memory_and_registers_are_refused_errors(stub_factory, clients) -> None:
    stub = stub_factory(packet_g=lambda self, packet: b"E01")
    client = attach(stub, clients)
    with pytest.raises(RemoteRefused, match=r"cannot read memory at 0x10 \(E14\)"):
        client.read_memory(0x10, 4)
    with pytest.raises(RemoteRefused, match="refused 'g': E01"):
        client.read_registers()
    with pytest.raises(RemoteRefused, match="no register 'cr9'"):
        client.read_register("cr9")


def test_garbage_flood_is_a_protocol_error(stub_factory, clients) -> None:
    stub = stub_factory(packet_g=lambda self, packet: Raw(b"x" * 100_000))
    client = attach(stub, clients)
    with pytest.raises(RemoteProtocolError, match="no packet"):
        client.read_registers()


def test_commands_while_running_and_waits_while_stopped_are_state_errors(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont=lambda self, packet: None)
    client = attach(stub, clients)
    with pytest.raises(SessionStateError, match="not running"):
        client.wait(0.1)
    client.resume([VContAction("c")])
    with pytest.raises(SessionStateError, match="running"):
        client.read_registers()


def test_close_from_another_thread_ends_a_wait(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont=lambda self, packet: None)
    client = attach(stub, clients)
    client.resume([VContAction("c")])
    threading.Timer(0.2, client.close).start()
    assert client.wait(timeout=10) == TargetDisconnected()


def test_nothing_listening_is_a_connection_error(tmp_path: Path) -> None:
    with pytest.raises(RemoteConnectionError, match="cannot connect") as error:
        GdbRemoteClient.connect(f"unix:{tmp_path / 'none.sock'}", timeout=1)
    one_line(error.value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RemoteConnectionError):
        GdbRemoteClient.connect(f"127.0.0.1:{port}", timeout=1)


@pytest.mark.parametrize("address", ["localhost", "unix:", "host:port", "host:99999", ":1234"])
def test_malformed_addresses_are_usage_errors(address: str) -> None:
    with pytest.raises(UsageError):
        GdbRemoteClient.connect(address)


def test_every_error_is_a_kvmbench_error() -> None:
    for cls in (RemoteConnectionError, RemoteProtocolError, RemoteRefused, RemoteTimeout):
        assert issubclass(cls, KvmbenchError)


def test_an_endless_thread_list_is_cut_off(stub_factory, clients) -> None:
    stub = stub_factory(packet_qsThreadInfo=lambda self, packet: b"mp1.2")
    client = attach(stub, clients)
    with pytest.raises(RemoteProtocolError, match="more than"):
        client.threads()


def test_an_endless_description_is_cut_off(stub_factory, clients) -> None:
    stub = stub_factory(packet_qXfer_features=lambda self, packet: b"m" + b"<" * 3000)
    with pytest.raises(RemoteProtocolError, match="goes on past"):
        attach(stub, clients)


def _exercise(client: GdbRemoteClient, name: str) -> None:
    if name == "packet_m":
        client.read_memory(MEMORY_BASE, 4)
    elif name == "packet_g":
        client.read_registers()
    elif name == "packet_Z":
        client.insert_breakpoint(BreakpointType.SOFTWARE, 0x1000)
    else:
        client.cont(timeout=0.1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=st.binary(max_size=64) | st.sampled_from([b"$", b"$E", b"#00", b"}", b"$OK#9a$", b"$m*#00", b"+-\x03"]))
def test_hostile_replies_end_in_remote_errors_only(tmp_path: Path, reply: bytes) -> None:
    for name in ("packet_m", "packet_g", "packet_Z", "packet_vCont"):
        stub = type("Hostile", (ScriptedStub,), {name: lambda self, packet, r=reply: Raw(r)})(
            Path(tempfile.mkdtemp(dir=tmp_path))
        )
        client = None
        try:
            client = GdbRemoteClient.connect(stub.address, timeout=0.1)
            _exercise(client, name)
        except (RemoteError, SessionStateError) as e:
            one_line(e)
        finally:
            if client is not None:
                client.close()
            stub.close()


def test_an_interrupt_before_the_resume_stops_it_at_once(stub_factory, clients) -> None:
    stub = stub_factory(packet_vCont=lambda self, packet: None)
    client = attach(stub, clients)
    client.interrupt()  # stopped: remembered, not sent into the void
    assert b"\x03" not in stub.received
    stop = client.cont(timeout=5)
    assert isinstance(stop, TargetStop) and stop.is_interrupt


def test_a_step_that_does_not_leave_our_breakpoint_is_taken_again(stub_factory, clients) -> None:
    def packet_vCont(self: ScriptedStub, packet: bytes) -> bytes:
        if packet.startswith(b"vCont;s") and self.log.count(packet) >= 2:
            self.regs["rip"] += 1  # the second step moves; the first was lost
        return self.stop_reply()

    stub = stub_factory(packet_vCont=packet_vCont)
    stub.regs["rip"] = 0x100040
    client = attach(stub, clients)
    assert client.insert_breakpoint(BreakpointType.SOFTWARE, 0x100040)
    stop = client.step()
    assert isinstance(stop, TargetStop) and stop.registers["rip"] == 0x100041
    assert client.lost_steps == 1
    assert stub.log[-5:] == [b"p10", b"vCont;s:p1.1", b"p10", b"vCont;s:p1.1", b"p10"]


def test_a_step_that_stays_put_elsewhere_is_not_repeated(stub_factory, clients) -> None:
    stub = stub_factory()  # every step leaves rip where it is, like `jmp .`
    stub.regs["rip"] = 0x100040
    client = attach(stub, clients)
    assert client.insert_breakpoint(BreakpointType.SOFTWARE, 0x200000)
    stop = client.step(pc=0x100040)
    assert isinstance(stop, TargetStop) and stop.registers["rip"] == 0x100040
    assert client.lost_steps == 0 and stub.log.count(b"vCont;s:p1.1") == 1


# --- round trips: packets back to back, register writes sent before a run ---------


def test_packets_sent_back_to_back_get_their_replies_in_order(stub_factory, clients) -> None:
    client = attach(stub_factory(), clients)
    first, second = client.read_memory_many([(MEMORY_BASE + 16, 4), (MEMORY_BASE + 300, 2)])
    assert first == bytes([16, 17, 18, 19])
    assert second == bytes([300 % 256, 301 % 256])


def test_a_range_the_stub_cannot_read_is_none_among_the_others(stub_factory, clients) -> None:
    client = attach(stub_factory(), clients)
    found = client.read_memory_many([(MEMORY_BASE, 2), (0x10, 2)])
    assert found == [bytes([0, 1]), None]


def test_register_writes_reach_the_stub_together_before_the_guest_runs(stub_factory, clients) -> None:
    from kvmbench.backends.gdbremote.target import GdbRemoteTarget

    stub = stub_factory()
    target = GdbRemoteTarget(attach(stub, clients), name="scripted")
    target.write_register("rsp", 0x1230)
    target.write_register("rip", MEMORY_BASE + 8)
    assert not any(p.startswith(b"P") for p in stub.log)  # nothing sent yet
    assert target.read_register("rsp") == 0x1230  # but read back as written
    target.resume()
    sent = [p[:1] for p in stub.log if p[:1] in (b"P", b"v")]
    assert sent[-3:] == [b"P", b"P", b"v"]
    assert stub.regs["rsp"] == 0x1230 and stub.regs["rip"] == MEMORY_BASE + 8


def test_a_refused_register_write_ends_the_resume_before_the_guest_runs(stub_factory, clients) -> None:
    from kvmbench.backends.gdbremote.target import GdbRemoteTarget

    stub = stub_factory(packet_P=lambda self, packet: b"E05")
    target = GdbRemoteTarget(attach(stub, clients), name="scripted")
    target.write_register("rax", 7)
    with pytest.raises(RemoteRefused) as refused:
        target.resume()
    assert "rax" in one_line(refused.value)
    assert not any(p.startswith(b"vCont;") for p in stub.log)


def test_the_guests_exit_waits_for_the_launched_stub_so_its_console_is_complete(stub_factory, clients) -> None:
    from kvmbench.backends.gdbremote.target import GdbRemoteTarget
    from kvmbench.backends.target import Exited

    stub = stub_factory(packet_vCont=lambda self, packet: b"W03")
    waited: list[float] = []
    target = GdbRemoteTarget(attach(stub, clients), name="scripted",
                             exit_code=lambda timeout: waited.append(timeout) or 3)
    event = target.resume()
    assert isinstance(event, Exited) and event.code == 3
    assert waited and waited[0] > 0  # the launcher was given time to end (and drain its console)
