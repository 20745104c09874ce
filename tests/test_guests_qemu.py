"""Every bundled guest boots under QEMU (TCG) through its PVH note and
prints and exits there exactly as under kvmbench's own VMM."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, QEMU_BINARY, Qemu, QemuOptions
from kvmbench.engine.model import StopReason
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError
from kvmbench.guests import GUEST_NAMES, QEMU_EXTRA_ARGS, guest_path, pvh_command_line

from conftest import HAVE_KVM, NO_KVM_REASON

needs_qemu = pytest.mark.skipif(shutil.which(QEMU_BINARY) is None, reason=f"{QEMU_BINARY} is not installed")
needs_kvm = pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM_REASON)

#: (guest, arguments): every guest, every probe mode that ends on a PC.
CASES: list[tuple[str, tuple[str, ...]]] = [
    ("hello", ()),
    ("fib", ("12",)),
    ("sort", ("40",)),
    ("sort", ("300",)),  # a usage error: exit code 64
    ("counter", ("5",)),
    ("callmix", ("30",)),
    ("selfmod", ()),
    ("int3guest", ("10",)),
    ("ticks", ("5",)),
    *(("probe", (mode,)) for mode in ("int3", "exec", "write", "read", "step", "irq", "sti_step", "movdr", "nope")),
    ("benchloop", ("call", "100")),
    ("benchloop", ("write", "100")),
]
# `probe hlt` is left out: it is a trap for the VMM (KVM_EXIT_HLT with no
# in-kernel irqchip), but on a PC a hlt with interrupts off halts for good.
# `spin` never ends: see test_spin_runs_silently_in_both.
assert {name for name, _ in CASES} | {"spin"} == set(GUEST_NAMES)


def run_in_vmm(open_guest: Callable[..., Session], name: str, args: tuple[str, ...]) -> tuple[str, int | None]:
    """Console and exit code under kvmbench's VMM, through a session (which
    hands the guest its own int3s where this host's KVM does not)."""
    session = open_guest(name, args)
    stop = session.cont()
    assert stop.reason is StopReason.EXITED, stop
    return session.console, stop.exit_code


def start_in_qemu(image: Path, args: tuple[str, ...] | list[str] = ()) -> Qemu:
    """A bundled guest under QEMU TCG, stopped before the firmware's first
    instruction."""
    options = QemuOptions(
        kernel=image, append=pvh_command_line(image, args), memory="64M",
        devices=(DEBUG_EXIT_DEVICE,), extra_args=QEMU_EXTRA_ARGS,
    )  # fmt: skip
    return Qemu.start(options)


def run_in_qemu(name: str, args: tuple[str, ...], timeout: float = 60) -> tuple[str, int | None]:
    qemu = start_in_qemu(guest_path(name), args)
    try:
        qemu.cont()
        code = qemu.wait_exit(timeout)
    finally:
        qemu.close()  # also drains the console
    return qemu.console, code


def comparable(name: str, console: str) -> str:
    """The console with what legitimately differs between two runs masked:
    how much work ticks got done between its timer ticks."""
    if name == "ticks":
        return re.sub(r"work = \d+", "work = M", console)
    return console


@needs_qemu
@needs_kvm
@pytest.mark.parametrize("name, args", CASES, ids=[" ".join((n, *a)) for n, a in CASES])
def test_guest_under_qemu_matches_the_vmm(open_guest: Callable[..., Session], name: str, args: tuple[str, ...]) -> None:
    vmm_console, vmm_code = run_in_vmm(open_guest, name, args)
    qemu_console, qemu_code = run_in_qemu(name, args)
    assert qemu_code == vmm_code
    assert comparable(name, qemu_console) == comparable(name, vmm_console)


@needs_qemu
def test_ticks_get_their_timer_interrupts_under_qemu() -> None:
    console, code = run_in_qemu("ticks", ("20",))
    assert code == 0
    match = re.fullmatch(r"ticks = (\d+) work = (\d+)\n", console)
    assert match, console
    assert int(match[1]) in (20, 21) and int(match[2]) > 0


@needs_qemu
@needs_kvm
def test_spin_runs_silently_in_both(open_guest: Callable[..., Session]) -> None:
    qemu = start_in_qemu(guest_path("spin"))
    try:
        qemu.cont()
        assert qemu.wait_exit(1.0) is None
        assert qemu.console == ""
    finally:
        qemu.close()
    session = open_guest("spin")
    threading.Timer(0.3, session.pause).start()
    assert session.cont().reason is StopReason.PAUSED
    assert session.console == ""


def test_pvh_command_line_is_the_vmm_argv() -> None:
    assert pvh_command_line(guest_path("fib"), ["20"]) == "fib 20"
    assert pvh_command_line("benchloop", ("call", "1000")) == "benchloop call 1000"


@pytest.mark.parametrize("bad", [["two words"], [""], ["x" * 5000]])
def test_pvh_command_line_refuses_what_the_guest_cannot_split(bad: list[str]) -> None:
    with pytest.raises(UsageError):
        pvh_command_line("fib", bad)


class _Memory:
    """Enough of GuestMemory for the VMM's boot writers: a byte array."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def write(self, address: int, data: bytes) -> None:
        self.data[address : address + len(data)] = data

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, value.to_bytes(8, "little"))


def without_accessed_bits(tables: bytes) -> list[int]:
    """Page-table entries and GDT descriptors (8 bytes each) with the bits
    the CPU sets as it uses them cleared: accessed and dirty in paging
    entries (SDM vol. 3, 4.8), accessed in descriptors (3.4.5.1)."""
    accessed_dirty, descriptor_accessed = 0x60, 1 << 40
    return [
        int.from_bytes(tables[i : i + 8], "little") & ~(accessed_dirty | descriptor_accessed)
        for i in range(0, len(tables), 8)
    ]


@needs_qemu
def test_pvh_entry_enters_start_as_the_vmm_does() -> None:
    """At _start under QEMU: the VMM's registers, page tables, GDT and argv."""
    from kvmbench.backends.gdbremote import GdbRemoteClient, TargetStop
    from kvmbench.backends.kvm import boot, layout
    from kvmbench.rsp.breakpoints import BreakpointType
    from kvmbench.symbols import load_symbols

    image, args = guest_path("benchloop"), ["call", "7"]
    start = load_symbols(image, dwarf=False).resolve("_start")
    qemu = start_in_qemu(image, args)
    try:
        assert qemu.gdb_address is not None
        with GdbRemoteClient.connect(qemu.gdb_address) as client:
            assert client.insert_breakpoint(BreakpointType.SOFTWARE, start)
            assert isinstance(client.cont(timeout=30), TargetStop)
            regs = client.read_registers()
            expected = _Memory(layout.BOOT_ARGS_ADDR + layout.BOOT_ARGS_SIZE)
            boot.write_boot_structures(expected)  # type: ignore[arg-type]
            argc, argv = boot.write_boot_args(expected, [image.stem, *args])  # type: ignore[arg-type]
            tables = slice(layout.PML4_ADDR, layout.GDT_ADDR + 24)
            actual = client.read_memory(tables.start, tables.stop - tables.start)
            assert without_accessed_bits(actual) == without_accessed_bits(bytes(expected.data[tables]))
            args_area = slice(layout.BOOT_ARGS_ADDR, layout.BOOT_ARGS_ADDR + layout.BOOT_ARGS_SIZE)
            assert client.read_memory(args_area.start, layout.BOOT_ARGS_SIZE) == bytes(expected.data[args_area])
    finally:
        qemu.close()
    vmm_regs = boot.initial_regs(start, argc, argv)
    general = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)), "rip")
    assert {name: regs[name] for name in general} == {name: getattr(vmm_regs, name) for name in general}
    assert regs["eflags"] == vmm_regs.rflags
    vmm_sregs = boot.long_mode_sregs(boot.abi.kvm_sregs())
    assert (regs["cr0"], regs["cr3"], regs["cr4"], regs["efer"]) == (
        vmm_sregs.cr0, vmm_sregs.cr3, vmm_sregs.cr4, vmm_sregs.efer
    )
    assert regs["cs"] == layout.GDT_CODE64_SELECTOR
    assert all(regs[s] == layout.GDT_DATA_SELECTOR for s in ("ss", "ds", "es", "fs", "gs"))
