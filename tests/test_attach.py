"""kvmbench.attach: a session over any GDB remote stub. Against a QEMU the
test starts stopped (-S), and against a scripted stub that misbehaves:
every failure is one clear line, nothing hangs, and what can go on does."""

from __future__ import annotations

import time

import pytest
from conftest import HAVE_QEMU, NO_QEMU_REASON, fib_calls
from gdbstub_scripted import HANG_UP, MEMORY_BASE, Raw

import kvmbench
from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, Qemu, QemuOptions
from kvmbench.engine.model import Mechanism, RunState, StopReason
from kvmbench.errors import BreakpointError, KvmbenchError, RemoteError, UsageError
from kvmbench.guests import QEMU_EXTRA_ARGS, guest_path, pvh_command_line

needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason=NO_QEMU_REASON)


@pytest.fixture
def stopped_qemu():  # type: ignore[no-untyped-def]
    """QEMU started by hand (-S, its gdbstub waiting) on the fib guest."""
    image = guest_path("fib")
    qemu = Qemu.start(QemuOptions(kernel=image, append=pvh_command_line(image, ["10"]),
                                  memory="32M", devices=(DEBUG_EXIT_DEVICE,),
                                  extra_args=QEMU_EXTRA_ARGS))
    yield qemu, image
    qemu.close()


@needs_qemu
def test_attach_to_a_stopped_qemu_breaks_counts_and_sees_the_exit(stopped_qemu) -> None:  # type: ignore[no-untyped-def]
    qemu, image = stopped_qemu
    s = kvmbench.attach(qemu.gdb_address, symbols=image)
    try:
        main = s.breakpoints.add("main")
        assert main.mechanism is Mechanism.STUB_BREAKPOINT
        stop = s.cont()  # from the reset vector, through the firmware and PVH entry
        assert stop.reason is StopReason.BREAKPOINT and stop.pc == main.address
        fib = s.breakpoints.trace("fib")
        stop = s.cont()
        assert stop.reason is StopReason.EXITED, stop.describe()
        assert fib.hit_count == fib_calls(10)
        assert "fib(10) = 55" in qemu.console
        assert qemu.wait_exit(5) == 0
    finally:
        s.close()


@needs_qemu
def test_attach_without_symbols_works_with_addresses(stopped_qemu) -> None:  # type: ignore[no-untyped-def]
    qemu, image = stopped_qemu
    entry = kvmbench.symbols.load_symbols(image).resolve("_start")
    with kvmbench.attach(qemu.gdb_address) as s:
        s.breakpoints.add(entry)
        assert s.cont().pc == entry
        with pytest.raises(KvmbenchError, match="unknown symbol"):
            s.breakpoints.add("fib")


def test_attach_to_nothing_is_a_one_line_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteError) as error:
        kvmbench.attach(f"unix:{tmp_path / 'nobody.sock'}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("address", ["", 42, None])
def test_an_address_that_is_no_address_is_a_usage_error(address) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError):
        kvmbench.attach(address)  # type: ignore[arg-type]


def test_a_stub_that_refuses_every_breakpoint_says_so_and_the_session_goes_on(stub_factory) -> None:  # type: ignore[no-untyped-def]
    stub = stub_factory(packet_Z=lambda self, packet: b"E22" if packet[1:2] in b"01" else b"OK")
    with kvmbench.attach(stub.address) as s:
        assert s.target.capabilities.stub_breakpoints == frozenset()
        with pytest.raises(BreakpointError, match="neither software traps nor hardware"):
            s.breakpoints.add(MEMORY_BASE)
        assert s.mem.read(MEMORY_BASE, 4) == bytes(range(4))  # still usable


def test_a_stub_whose_replies_are_garbled_gives_a_clear_error(stub_factory) -> None:  # type: ignore[no-untyped-def]
    stub = stub_factory(packet_m=lambda self, packet: Raw(b"$zz#00$zz#00$zz#00$zz#00$zz#00$zz#00"))
    with kvmbench.attach(stub.address) as s:
        start = time.monotonic()
        with pytest.raises(KvmbenchError) as error:
            s.mem.read(MEMORY_BASE, 4)
        assert time.monotonic() - start < 10
        assert "\n" not in str(error.value)


def test_a_stub_that_hangs_up_during_a_run_ends_it_as_a_crash(stub_factory) -> None:  # type: ignore[no-untyped-def]
    stub = stub_factory(packet_vCont=lambda self, packet: HANG_UP)
    s = kvmbench.attach(stub.address)
    try:
        stop = s.cont()
        assert stop.reason in (StopReason.CRASHED, StopReason.EXITED)
        assert "closed" in stop.detail or "connection" in stop.detail
        assert s.state in (RunState.CRASHED, RunState.EXITED)
    finally:
        s.close()


def test_a_stub_that_never_answers_a_resume_can_be_paused(stub_factory) -> None:  # type: ignore[no-untyped-def]
    import threading

    stub = stub_factory(packet_vCont=lambda self, packet: None)  # runs until interrupted
    s = kvmbench.attach(stub.address)
    try:
        result = []
        runner = threading.Thread(target=lambda: result.append(s.cont()))
        runner.start()
        time.sleep(0.2)
        s.pause()
        runner.join(5)
        assert not runner.is_alive() and result[0].reason is StopReason.PAUSED
    finally:
        s.close()
