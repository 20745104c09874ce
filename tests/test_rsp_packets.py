"""One parser and one builder per packet kind, each checked against the
GDB manual's grammar and against the other (build, then parse back)."""

from __future__ import annotations

import pytest

from kvmbench.errors import RspError
from kvmbench.rsp import breakpoints, features, memory, registers, replies, resume, stops, threads, xfer
from kvmbench.rsp.breakpoints import BreakpointRequest, BreakpointType
from kvmbench.rsp.layout import X86_64
from kvmbench.rsp.resume import VContAction
from kvmbench.rsp.stops import (
    ConsoleOutput,
    Exited,
    NoResumed,
    Stopped,
    Terminated,
    ThreadExited,
    WatchHit,
    WatchKind,
)
from kvmbench.rsp.threads import ALL, ThreadId

# --- thread ids --------------------------------------------------------------------


@pytest.mark.parametrize("text, thread", [
    (b"p1.1", ThreadId(1, 1)),
    (b"p01.02", ThreadId(2, 1)),
    (b"p1", ThreadId(ALL, 1)),
    (b"p-1.-1", ThreadId(ALL, ALL)),
    (b"-1", ThreadId(ALL)),
    (b"0", ThreadId(0)),
    (b"1a", ThreadId(0x1A)),
])  # fmt: skip
def test_thread_id_forms(text: bytes, thread: ThreadId) -> None:
    assert threads.parse_thread_id(text) == thread
    assert threads.parse_thread_id(threads.format_thread_id(thread)) == thread


@pytest.mark.parametrize("bad", [b"", b"p", b"p.1", b"p1.", b"-2", b"x", b"p1.1.1"])
def test_malformed_thread_ids_are_refused(bad: bytes) -> None:
    with pytest.raises(RspError):
        threads.parse_thread_id(bad)


def test_thread_list_chunks() -> None:
    assert threads.parse_thread_list_reply(b"mp01.01,p01.02") == threads.ThreadListChunk(
        (ThreadId(1, 1), ThreadId(2, 1)), False
    )
    assert threads.parse_thread_list_reply(b"l") == threads.ThreadListChunk((), True)
    assert threads.build_thread_list_reply([ThreadId(1, 1)], last=False) == b"mp1.1"
    assert threads.build_thread_list_reply([], last=True) == b"l"
    with pytest.raises(RspError):
        threads.parse_thread_list_reply(b"m")


def test_set_thread_and_current_thread() -> None:
    assert threads.build_set_thread("g", ThreadId(2, 1)) == b"Hgp1.2"
    assert threads.parse_set_thread(b"Hc-1") == threads.SetThread("c", ThreadId(ALL))
    assert threads.parse_current_thread_reply(b"QCp01.01") == ThreadId(1, 1)
    assert threads.build_current_thread_reply(ThreadId(3)) == b"QC3"
    assert threads.parse_thread_alive(threads.build_thread_alive(ThreadId(1, 1))) == ThreadId(1, 1)
    with pytest.raises(RspError):
        threads.build_set_thread("x", ThreadId(1))


# --- stop replies ------------------------------------------------------------------


def test_qemu_breakpoint_stop() -> None:
    assert stops.parse_stop_reply(b"T05thread:p01.01;") == Stopped(5, ThreadId(1, 1))


def test_t_reply_with_registers_and_reasons() -> None:
    reply = stops.parse_stop_reply(b"T0506:0000000000000000;07:f0ff0000000000;10:1000100000000000;thread:p1.2;core:1;swbreak:;")
    assert isinstance(reply, Stopped)
    assert reply.signal == 5 and reply.thread == ThreadId(2, 1) and reply.core == 1 and reply.swbreak
    assert reply.registers[0x10] == bytes.fromhex("1000100000000000")
    assert set(reply.registers) == {6, 7, 0x10}


@pytest.mark.parametrize("key, kind", [(b"watch", WatchKind.WRITE), (b"rwatch", WatchKind.READ), (b"awatch", WatchKind.ACCESS)])
def test_watch_reasons_carry_the_data_address(key: bytes, kind: WatchKind) -> None:
    # "awatch" starts with a hex digit: it must not be taken for a register.
    reply = stops.parse_stop_reply(b"T05%s:1000f0;thread:01;" % key)
    assert isinstance(reply, Stopped) and reply.watch == WatchHit(kind, 0x1000F0) and not reply.registers


def test_hwbreak_and_unknown_pairs_are_kept() -> None:
    reply = stops.parse_stop_reply(b"T05hwbreak:;library:;create:p1.3;")
    assert isinstance(reply, Stopped) and reply.hwbreak
    assert reply.other == ((b"library", b""), (b"create", b"p1.3"))


@pytest.mark.parametrize("text, reply", [
    (b"S02", Stopped(2)),
    (b"W00", Exited(0)),
    (b"W81;process:2a", Exited(0x81, 0x2A)),
    (b"X09", Terminated(9)),
    (b"O48690a", ConsoleOutput(b"Hi\n")),
    (b"N", NoResumed()),
    (b"w00;p1.2", ThreadExited(0, ThreadId(2, 1))),
])  # fmt: skip
def test_other_stop_replies(text: bytes, reply: stops.StopReply) -> None:
    assert stops.parse_stop_reply(text) == reply
    assert stops.parse_stop_reply(stops.build_stop_reply(reply)) == reply


@pytest.mark.parametrize("bad", [b"", b"OK", b"T5", b"Tzz", b"T05thread", b"W", b"S0", b"W00;pid:1", b"w00", b"O", b"Q"])
def test_non_stop_replies_are_refused(bad: bytes) -> None:
    with pytest.raises(RspError):
        stops.parse_stop_reply(bad)


def test_built_t_reply_parses_back() -> None:
    reply = Stopped(5, ThreadId(1, 1), 0, {16: b"\x00\x10\x10\x00\x00\x00\x00\x00"}, WatchHit(WatchKind.ACCESS, 0x2000), True, True)
    assert stops.parse_stop_reply(stops.build_stop_reply(reply)) == reply


# --- qSupported --------------------------------------------------------------------


def test_qsupported_both_ways() -> None:
    packet = features.build_qsupported({"multiprocess": True, "swbreak": True, "xmlRegisters": "i386"})
    assert packet == b"qSupported:multiprocess+;swbreak+;xmlRegisters=i386"
    assert features.parse_qsupported(packet).supported("swbreak")
    reply = features.parse_qsupported_reply(b"PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+;QStartNoAckMode-")
    assert reply.packet_size == 0x1000
    assert reply.supported("qXfer:features:read") and not reply.supported("QStartNoAckMode")
    assert not reply.supported("swbreak")
    assert features.parse_qsupported(b"qSupported") == features.Features({})


def test_qsupported_reply_is_built_from_implemented_packets() -> None:
    implemented = ["g", "m", "QStartNoAckMode", "qXfer:features:read", "bc"]
    announced = features.announced_packets(implemented)
    assert announced == {"QStartNoAckMode": True, "qXfer:features:read": True, "ReverseContinue": True}
    reply = features.build_qsupported_reply(0x4000, {**announced, "swbreak": True})
    assert reply == b"PacketSize=4000;QStartNoAckMode+;qXfer:features:read+;ReverseContinue+;swbreak+"


@pytest.mark.parametrize("bad", [b"x", b"=1", b"+"])
def test_malformed_features_are_refused(bad: bytes) -> None:
    with pytest.raises(RspError):
        features.parse_features(bad)


# --- qXfer -------------------------------------------------------------------------


def test_xfer_read_request_both_ways() -> None:
    packet = xfer.build_xfer_read("features", "target.xml", 0, 0xFFB)
    assert packet == b"qXfer:features:read:target.xml:0,ffb"
    assert xfer.parse_xfer_read(packet) == xfer.XferRead("features", "target.xml", 0, 0xFFB)
    assert xfer.parse_xfer_read(b"qXfer:threads:read::10,20") == xfer.XferRead("threads", "", 0x10, 0x20)


def test_xfer_replies_chunk_a_document() -> None:
    document = b"<target>0123456789</target>"
    chunks, offset = [], 0
    while True:
        chunk = xfer.parse_xfer_reply(xfer.build_xfer_reply(document, offset, 10))
        chunks.append(chunk.data)
        offset += len(chunk.data)
        if chunk.last:
            break
    assert b"".join(chunks) == document and len(chunks) == 3
    assert xfer.build_xfer_reply(document, 100, 10) == b"l"


@pytest.mark.parametrize("bad", [b"qXfer:features:write:a:0,1", b"qXfer:features:read:a:01", b"qXfer::read:a:0,1", b"qXfer:x"])
def test_malformed_xfer_requests_are_refused(bad: bytes) -> None:
    with pytest.raises(RspError):
        xfer.parse_xfer_read(bad)


def test_an_empty_m_chunk_is_refused() -> None:
    with pytest.raises(RspError, match="never end"):
        xfer.parse_xfer_reply(b"m")


# --- memory ------------------------------------------------------------------------


def test_memory_packets() -> None:
    assert memory.build_read_memory(0x100000, 16) == b"m100000,10"
    assert memory.parse_read_memory(b"m100000,10") == memory.MemoryRead(0x100000, 16)
    assert memory.parse_memory_reply(b"55488bec") == b"\x55\x48\x8b\xec"
    packet = memory.build_write_memory(0x2000, b"\x01\x02")
    assert packet == b"M2000,2:0102"
    assert memory.parse_write_memory(packet) == memory.MemoryWrite(0x2000, b"\x01\x02")
    binary = memory.build_write_binary(0x2000, b"$#}*")
    assert binary == b"X2000,4:$#}*"
    assert memory.parse_write_binary(binary) == memory.MemoryWrite(0x2000, b"$#}*")
    assert memory.build_write_binary(0, b"") == b"X0,0:"


@pytest.mark.parametrize("bad", [b"M0,2:01", b"M0,1", b"X0,2:a", b"m0", b"mz,1"])
def test_malformed_memory_packets_are_refused(bad: bytes) -> None:
    parse = {b"M": memory.parse_write_memory, b"X": memory.parse_write_binary, b"m": memory.parse_read_memory}[bad[:1]]
    with pytest.raises(RspError):
        parse(bad)


# --- breakpoints -------------------------------------------------------------------


def test_breakpoint_packets() -> None:
    assert breakpoints.build_breakpoint(True, BreakpointType.SOFTWARE, 0x100040, 1) == b"Z0,100040,1"
    assert breakpoints.build_breakpoint(False, BreakpointType.ACCESS_WATCH, 0x2000, 8) == b"z4,2000,8"
    assert breakpoints.parse_breakpoint(b"Z2,2000,4") == BreakpointRequest(True, BreakpointType.WRITE_WATCH, 0x2000, 4)
    assert breakpoints.parse_breakpoint(b"Z0,10,1;X2,a00a") == BreakpointRequest(True, BreakpointType.SOFTWARE, 0x10, 1, b"X2,a00a")
    assert BreakpointType.READ_WATCH.is_watchpoint and not BreakpointType.HARDWARE.is_watchpoint


@pytest.mark.parametrize("bad", [b"Z5,0,1", b"Z0,0", b"Z0,x,1", b"Y0,0,1"])
def test_malformed_breakpoint_packets_are_refused(bad: bytes) -> None:
    with pytest.raises(RspError):
        breakpoints.parse_breakpoint(bad)


# --- resume ------------------------------------------------------------------------


def test_vcont_query_reply() -> None:
    assert resume.parse_vcont_actions_reply(b"vCont;c;C;s;S") == frozenset("cCsS")
    assert resume.parse_vcont_actions_reply(b"") == frozenset()
    assert resume.build_vcont_actions_reply("csCSt") == b"vCont;c;s;C;S;t"
    with pytest.raises(RspError):
        resume.parse_vcont_actions_reply(b"OK")


def test_vcont_packets_both_ways() -> None:
    actions = (
        VContAction("s", ThreadId(1, 1)),
        VContAction("C", ThreadId(2, 1), signal=0x0E),
        VContAction("r", ThreadId(3, 1), range=(0x1000, 0x1010)),
        VContAction("c"),
    )
    packet = resume.build_vcont(actions)
    assert packet == b"vCont;s:p1.1;C0e:p1.2;r1000,1010:p1.3;c"
    assert resume.parse_vcont(packet) == actions


@pytest.mark.parametrize("bad", [b"vCont;", b"vCont;x", b"vCont;C1", b"vCont;c5", b"vCont;r10", b"vCont;s:"])
def test_malformed_vcont_is_refused(bad: bytes) -> None:
    with pytest.raises(RspError):
        resume.parse_vcont(bad)


def test_plain_continue_and_step() -> None:
    assert resume.build_continue() == b"c" and resume.build_step(0x1000) == b"s1000"
    assert resume.parse_continue_or_step(b"s1000") == ("s", 0x1000)
    assert resume.parse_continue_or_step(b"c") == ("c", None)


# --- registers ---------------------------------------------------------------------


def test_g_reply_decodes_by_layout_in_target_byte_order() -> None:
    values = {name: i for i, name in enumerate(X86_64.names)}
    values["rip"] = 0x100040
    reply = registers.build_registers_reply(values, X86_64)
    assert len(reply) == 2 * X86_64.g_size
    assert reply[2 * 128 : 2 * 136] == b"4000100000000000"  # rip at offset 128
    assert registers.parse_registers_reply(reply, X86_64) == values


def test_unavailable_and_missing_registers_are_none() -> None:
    reply = registers.build_registers_reply({"rax": 1}, X86_64)
    decoded = registers.parse_registers_reply(reply[: 2 * 16], X86_64)
    assert decoded["rax"] == 1 and decoded["rbx"] is None and decoded["rip"] is None


def test_g_reply_ending_inside_a_register_is_refused() -> None:
    with pytest.raises(RspError, match="inside register rbx"):
        registers.parse_registers_reply(b"00" * 12, X86_64)


def test_p_and_p_write_packets() -> None:
    rip = X86_64.get("rip")
    assert registers.build_read_register(rip.regnum) == b"p10"
    assert registers.parse_read_register(b"p10") == 16
    assert registers.parse_register_reply(b"4000100000000000", rip) == 0x100040
    assert registers.parse_register_reply(b"xxxxxxxxxxxxxxxx", rip) is None
    assert registers.build_write_register(rip, 0x100040) == b"P10=4000100000000000"
    assert registers.parse_write_register(b"P10=4000100000000000") == registers.RegisterWrite(16, bytes.fromhex("4000100000000000"))
    with pytest.raises(RspError):
        registers.parse_register_reply(b"40", rip)


def test_g_and_p_values_agree_for_wide_registers() -> None:
    xmm1 = X86_64.get("xmm1")
    value = (1 << 127) | 0x1234
    reply = registers.build_registers_reply({"xmm1": value}, X86_64)
    offset = 2 * X86_64.g_offset("xmm1")
    assert registers.parse_register_reply(reply[offset : offset + 32], xmm1) == value


# --- generic replies ---------------------------------------------------------------


def test_error_replies() -> None:
    assert replies.parse_error_reply(b"E01") == replies.ErrorReply(1)
    assert replies.parse_error_reply(b"E.no such thing") == replies.ErrorReply(None, "no such thing")
    assert replies.parse_error_reply(b"OK") is None
    assert replies.parse_error_reply(b"e1") is None
    assert replies.parse_error_reply(b"E1a2b") is None  # hex data, not an error
    assert replies.build_error_reply(0x16) == b"E16"
    assert replies.is_ok(b"OK") and replies.is_unsupported(b"")
