"""The client against real QEMU (TCG), started stopped (-S) with a bundled
guest: its target description as real gdb reads it, breakpoints, steps,
registers, memory, watchpoints, vCPUs, interrupts and the guest's exit."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest
from elftools.elf.elffile import ELFFile

from kvmbench.backends.gdbremote import GdbRemoteClient, TargetDisconnected, TargetStop
from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, QEMU_BINARY, Qemu, QemuOptions
from kvmbench.errors import RemoteTimeout
from kvmbench.guests import QEMU_EXTRA_ARGS, guest_path, pvh_command_line
from kvmbench.rsp.breakpoints import BreakpointType
from kvmbench.rsp.resume import VContAction
from kvmbench.rsp.stops import WatchKind
from kvmbench.symbols import load_symbols

from conftest import fib_calls

pytestmark = pytest.mark.skipif(shutil.which(QEMU_BINARY) is None, reason=f"{QEMU_BINARY} is not installed")


class Guest:
    """A bundled guest under QEMU, stopped before its first instruction,
    with a client attached to QEMU's gdbstub."""

    def __init__(self, name: str, args: tuple[str, ...], smp: int) -> None:
        self.name = name
        self.image = guest_path(name)
        self.symbols = load_symbols(self.image, dwarf=False)
        # smp through extra_args: QemuOptions(smp > 1) puts thread=multi into
        # -machine, where QEMU 7.2 refuses it (kvmbench/backends/qemu.py).
        options = QemuOptions(
            kernel=self.image, append=pvh_command_line(self.image, args), memory="64M",
            devices=(DEBUG_EXIT_DEVICE,), extra_args=(*QEMU_EXTRA_ARGS, "-smp", str(smp)),
        )  # fmt: skip
        self.qemu = Qemu.start(options)
        try:
            self.client = GdbRemoteClient.connect(self.qemu.gdb_address)
        except BaseException:
            self.qemu.close()
            raise

    def address(self, symbol: str) -> int:
        return self.symbols.resolve(symbol)

    def elf_bytes(self, address: int, length: int) -> bytes:
        with self.image.open("rb") as f:
            for section in ELFFile(f).iter_sections():
                start = section["sh_addr"]
                if section["sh_type"] == "SHT_PROGBITS" and start <= address < start + section["sh_size"]:
                    return section.data()[address - start : address - start + length]
        raise AssertionError(f"{address:#x} is in no section of {self.image}")

    def close(self) -> None:
        self.client.close()
        self.qemu.close()


@pytest.fixture
def guest() -> Iterator[Callable[..., Guest]]:
    started: list[Guest] = []

    def start(name: str, *args: str, smp: int = 1) -> Guest:
        g = Guest(name, args, smp)
        started.append(g)
        return g

    yield start
    for g in started:
        g.close()


def run_to(g: Guest, symbol: str) -> TargetStop:
    """Continue to ``symbol``'s first instruction through a Z0 (removed again)."""
    address = g.address(symbol)
    assert g.client.insert_breakpoint(BreakpointType.SOFTWARE, address)
    stop = g.client.cont(timeout=30)
    assert g.client.remove_breakpoint(BreakpointType.SOFTWARE, address)
    assert isinstance(stop, TargetStop) and stop.is_trap, stop
    assert g.client.read_register("rip") == address
    return stop


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_qemu_description_reads_as_real_gdb_reads_it(guest: Callable[..., Guest]) -> None:
    g = guest("hello")
    layout = g.client.layout
    assert g.client.target_xml is not None and b"xi:include" in g.client.target_xml
    assert layout.architecture == "i386:x86-64"
    g.client.close()  # QEMU's stub takes one debugger at a time
    out = subprocess.run(
        ["gdb", "-nx", "-batch", "-ex", f"target remote {g.qemu.gdb_address.removeprefix('unix:')}",
         "-ex", "maint print remote-registers"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    gdb_rows = sorted(
        (f[0], int(f[6]), int(f[7]), int(f[4]))
        for f in (line.split() for line in out.splitlines())
        if len(f) == 8 and f[1].isdigit() and re.fullmatch(r"\d+", f[6])
    )
    ours = sorted((r.name, r.regnum, layout.g_offset(r.name), r.size) for r in layout.registers)
    assert ours == gdb_rows and len(ours) > 60


def test_handshake_with_qemu_72(guest: Callable[..., Guest]) -> None:
    g = guest("hello")
    c = g.client
    assert c.features.supported("qXfer:features:read")
    assert "c" in c.vcont_actions and "s" in c.vcont_actions
    assert isinstance(c.initial_stop, TargetStop)
    assert c.threads() == (c.initial_stop.thread,)
    # Stopped by -S at the reset vector, before the firmware.
    assert c.read_register("rip") == 0xFFF0 and c.read_register("cs") == 0xF000


def test_break_at_a_symbol_then_registers_memory_and_a_step(guest: Callable[..., Guest]) -> None:
    g = guest("fib", "12")
    fib = g.address("fib")
    stop = run_to(g, "fib")
    assert stop.thread in g.client.threads()
    regs = g.client.read_registers()
    assert regs["rip"] == fib and regs["rdi"] == 12  # fib(12), the first call
    assert g.address("runtime_stack") < regs["rsp"] < g.address("runtime_stack_top")
    assert regs["cs"] == 0x08 and regs["ss"] == 0x10
    code = g.client.read_memory(fib, 32)
    assert code == g.elf_bytes(fib, 32)
    assert code[0] == 0x55  # push %rbp: one byte
    step = g.client.step()
    assert isinstance(step, TargetStop) and step.is_trap
    assert g.client.read_register("rip") == fib + 1
    assert g.client.read_register("rsp") == regs["rsp"] - 8
    assert g.client.read_memory(regs["rsp"] - 8, 8) == regs["rbp"].to_bytes(8, "little")


def test_every_call_hits_a_kept_breakpoint_and_the_guest_exits(guest: Callable[..., Guest]) -> None:
    # QEMU's Z0 at the resume pc fires again at once: a step leaves it.
    g = guest("fib", "10")
    fib = g.address("fib")
    assert g.client.insert_breakpoint(BreakpointType.SOFTWARE, fib)
    hits = 0
    stop = g.client.cont(timeout=30)
    while isinstance(stop, TargetStop):
        hits += 1
        step = g.client.step(pc=fib)
        assert isinstance(step, TargetStop) and step.registers["rip"] == fib + 1
        stop = g.client.cont(timeout=30)
    assert stop == TargetDisconnected()  # QEMU 7.2 sends no W on isa-debug-exit
    assert hits == fib_calls(10)
    assert g.qemu.wait_exit(10) == 0
    g.qemu.close()  # drains the console
    assert g.qemu.console == "fib(10) = 55\n"


def test_the_exit_code_comes_from_qemu(guest: Callable[..., Guest]) -> None:
    g = guest("sort", "300")
    assert g.client.cont(timeout=30) == TargetDisconnected()
    assert g.qemu.wait_exit(10) == 64


def test_write_watchpoint_through_z2(guest: Callable[..., Guest]) -> None:
    g = guest("counter", "3")
    counter = g.address("counter")
    assert g.client.insert_breakpoint(BreakpointType.WRITE_WATCH, counter, 8)
    values = []
    for _ in range(3):
        stop = g.client.cont(timeout=30)
        assert isinstance(stop, TargetStop) and stop.watch is not None
        assert (stop.watch.kind, stop.watch.address) == (WatchKind.WRITE, counter)
        values.append(int.from_bytes(g.client.read_memory(counter, 8), "little"))
    assert len(set(values)) == 3  # each stop after a store that changed it
    assert g.client.remove_breakpoint(BreakpointType.WRITE_WATCH, counter, 8)
    assert g.client.cont(timeout=30) == TargetDisconnected()
    assert g.qemu.wait_exit(10) == 0


@pytest.mark.parametrize("type_, kind", [(BreakpointType.READ_WATCH, WatchKind.READ), (BreakpointType.ACCESS_WATCH, WatchKind.ACCESS)])
def test_read_and_access_watchpoints(guest: Callable[..., Guest], type_: BreakpointType, kind: WatchKind) -> None:
    g = guest("counter", "3")
    read_me = g.address("read_me")
    run_to(g, "reader")  # the reads of read_me are in reader()
    assert g.client.insert_breakpoint(type_, read_me, 8)
    stop = g.client.cont(timeout=30)
    assert isinstance(stop, TargetStop) and stop.watch is not None
    assert (stop.watch.kind, stop.watch.address) == (kind, read_me)


def test_tcg_takes_more_hardware_breakpoints_than_x86_has_slots(guest: Callable[..., Guest]) -> None:
    g = guest("callmix", "20")
    functions = [g.address(f"f{i}") for i in range(8)]
    assert all(g.client.insert_breakpoint(BreakpointType.HARDWARE, a) for a in functions)
    stop = g.client.cont(timeout=30)
    assert isinstance(stop, TargetStop) and g.client.read_register("rip") in functions


def test_interrupt_stops_a_spinning_guest(guest: Callable[..., Guest]) -> None:
    g = guest("spin")
    g.client.resume([VContAction("c")])
    threading.Timer(0.3, g.client.interrupt).start()
    stop = g.client.wait(timeout=30)
    assert isinstance(stop, TargetStop) and stop.is_interrupt
    function = g.symbols.get_containing(g.client.read_register("rip"))
    assert function is not None and function.name == "spin_forever"


def test_a_wait_times_out_and_the_guest_can_still_be_interrupted(guest: Callable[..., Guest]) -> None:
    g = guest("spin")
    g.client.resume([VContAction("c")])
    with pytest.raises(RemoteTimeout):
        g.client.wait(timeout=0.3)
    g.client.interrupt()
    assert isinstance(g.client.wait(timeout=30), TargetStop)


def test_memory_and_register_writes_without_x(guest: Callable[..., Guest]) -> None:
    g = guest("spin")
    run_to(g, "spin_forever")
    spins = g.address("spins")
    g.client.write_memory(spins, b"\x11\x22\x33\x44\x55\x66\x77\x88")
    assert g.client.has_binary_write is False  # QEMU 7.2 has no X: M instead
    assert g.client.read_memory(spins, 8) == b"\x11\x22\x33\x44\x55\x66\x77\x88"
    g.client.write_register("rax", 0xDEADBEEF)
    assert g.client.read_register("rax") == 0xDEADBEEF
    assert g.client.read_registers()["rax"] == 0xDEADBEEF


def test_vcpus_are_threads(guest: Callable[..., Guest]) -> None:
    g = guest("hello", smp=2)
    threads = g.client.threads()
    assert len(threads) == 2 and len(set(threads)) == 2
    stop = run_to(g, "main")
    other = next(t for t in threads if t != stop.thread)
    # The boot vCPU reached main; the firmware (SeaBIOS) parked the other
    # in its own code, below the guest image.
    assert g.client.read_register("rip", thread=stop.thread) == g.address("main")
    assert g.client.read_register("rip", thread=other) < 0x100000
    step = g.client.step(stop.thread)
    assert isinstance(step, TargetStop) and g.client.read_register("rip", thread=stop.thread) == g.address("main") + 1
