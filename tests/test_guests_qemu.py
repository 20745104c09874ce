"""Every bundled guest boots under QEMU (TCG) through its PVH note and
prints and exits there exactly as under kvmbench's own VMM."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest

from kvmbench.engine.model import StopReason
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError
from kvmbench.guests import GUEST_NAMES, guest_path, pvh_command_line

from conftest import HAVE_KVM, NO_KVM_REASON
from qemu_local import NO_QEMU_REASON, QEMU, LocalQemu

needs_qemu = pytest.mark.skipif(QEMU is None, reason=NO_QEMU_REASON)
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


def run_in_qemu(name: str, args: tuple[str, ...], timeout: float = 60) -> tuple[str, int | None]:
    qemu = LocalQemu.start(guest_path(name), pvh_command_line(guest_path(name), args))
    try:
        code = qemu.wait_exit(timeout)
        return qemu.console, code
    finally:
        qemu.close()


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
    qemu = LocalQemu.start(guest_path("spin"), pvh_command_line("spin"))
    try:
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
