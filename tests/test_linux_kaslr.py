"""KASLR on a bzImage boot: the kernel's decompressor moves it, and the
slide read from the guest's /proc/kallsyms (through kvmbench's init) equals
VMCOREINFO's KERNELOFFSET found in guest memory. One cold boot of Debian's
bzImage (~12 s on TCG) the first time, its snapshot after that."""

from __future__ import annotations

import shutil

import pytest

from kvmbench.backends.linux.image import KernelImageError, debian_kernel
from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions
from kvmbench.symbols.kallsyms import KASLR_ALIGNMENT, parse_kallsyms

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def machine():
    try:
        debian_kernel(fetch=False)
    except KernelImageError as exc:
        pytest.skip(str(exc))
    machine = LinuxMachine.boot(LinuxOptions(kaslr=True))
    yield machine
    machine.close()


def proc_text_address(machine: LinuxMachine) -> int:
    # _text is among the first kallsyms lines (after the per-CPU offsets):
    # no need to carry all of /proc/kallsyms over the UART.
    head = machine.shell("head -n 400 /proc/kallsyms").output
    return parse_kallsyms(head).get_by_name("_text").address  # type: ignore[union-attr]


def test_the_bzimage_kernel_is_moved(machine) -> None:
    slide = machine.vmcoreinfo().kernel_offset
    assert slide != 0
    assert slide % KASLR_ALIGNMENT == 0


def test_slide_from_kallsyms_equals_vmcoreinfos_kerneloffset(machine) -> None:
    assert proc_text_address(machine) - machine.link_address() == machine.vmcoreinfo().kernel_offset


def test_symbols_from_memory_carry_the_slide(machine) -> None:
    assert machine.symbols().get_by_name("_text").address == proc_text_address(machine)
    assert machine.kaslr_slide_from_kallsyms() == machine.vmcoreinfo().kernel_offset


def test_vmcoreinfo_symbols_are_runtime_addresses(machine) -> None:
    info = machine.vmcoreinfo()
    assert info.symbol("init_uts_ns") == machine.symbols().get_by_name("init_uts_ns").address


def test_a_session_on_the_moved_kernel_breaks_and_unwinds_at_its_runtime_addresses(machine) -> None:
    import kvmbench
    from kvmbench.engine.model import StopReason

    slide = machine.vmcoreinfo().kernel_offset
    with kvmbench.linux(kaslr=True) as session:  # the same machine: its snapshot
        entry = session.symbols.resolve("__x64_sys_newuname")
        assert entry == machine.symbols().get_by_name("__x64_sys_newuname").address
        bp = session.breakpoints.add("__x64_sys_newuname")
        result = session.shell("uname -r")
        assert result.stop is not None and result.stop.reason is StopReason.BREAKPOINT
        assert session.pc == entry and session.kaslr_offset == slide
        if session.vmlinux is not None:
            # drgn placed the DWARF by VMCOREINFO's KERNELOFFSET: its symbols are runtime addresses too.
            assert session.drgn.symbol("__x64_sys_newuname").address == entry
            names = [session.symbols.format_address(pc).split("+")[0] for pc in session.backtrace()]
            assert names[:2] == ["__x64_sys_newuname", "do_syscall_64"]
        session.breakpoints.delete(bp.number)
        assert session.wait_command().output.strip() == session.release
