"""kvmbench.linux(): Debian's kernel under QEMU TCG as a debug session.

One session serves the whole module (booted from the cached snapshot; cold
the first time on a machine): the shell, exact counts of a rare system
call's kernel entry through the plugin counter, a breakpoint there with
the caller's argument in its register, kernel backtraces, drgn, pending
breakpoints in a module that loads later, and bad input that ends in one
line while the session goes on. The test program (tests/fixtures/linux/
syscalls.c) makes exactly N personality(0xffffffff) calls, a system call
nothing else in the guest makes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.linux.guest import build_syscalls

import kvmbench
from kvmbench.backends.linux.channel import CommandTimeout
from kvmbench.backends.linux.image import KernelImageError, debian_kernel
from kvmbench.backends.linux.initramfs import InitramfsError
from kvmbench.engine.model import Mechanism, StopReason
from kvmbench.errors import KvmbenchError, SessionStateError, UsageError
from kvmbench.linux_session import LinuxSession, PendingBreakpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]

#: __NR_personality (arch/x86/entry/syscalls/syscall_64.tbl).
NR_PERSONALITY = 135
#: struct pt_regs offsets of di and orig_ax (arch/x86/include/asm/ptrace.h).
PT_REGS_DI, PT_REGS_ORIG_AX = 14 * 8, 15 * 8
ENTRY = "__x64_sys_personality"


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    try:
        debian_kernel(fetch=False)
    except KernelImageError as exc:
        pytest.skip(str(exc))
    return {"/bin/syscalls": build_syscalls(tmp_path_factory.mktemp("linux-session"))}


@pytest.fixture(scope="session")
def kernel(programs: dict[str, Path]) -> Iterator[LinuxSession]:
    session = kvmbench.linux(files=programs, modules=["cpuid"])
    yield session
    session.close()


@pytest.fixture
def linux(kernel: LinuxSession) -> Iterator[LinuxSession]:
    """The shared session, left as the next test expects it: no
    breakpoints, no command waiting."""
    yield kernel
    if kernel.state.value != "stopped":
        return
    for bp in list(kernel.breakpoints):
        kernel.breakpoints.delete(bp.number)
    if kernel.command is not None:
        kernel.wait_command()


def needs_dwarf(session: LinuxSession) -> None:
    if session.vmlinux is None:
        pytest.skip("no vmlinux with DWARF in the cache: make linux-debug (~860 MB download)")


def test_the_session_is_stopped_at_the_ready_shell(linux: LinuxSession) -> None:
    assert linux.state.value == "stopped"
    assert linux.shell("uname -r").output.strip() == linux.release
    assert linux.state.value == "stopped"


def test_shell_returns_the_output_in_order_and_the_exit_code(linux: LinuxSession) -> None:
    result = linux.shell("echo out; echo err >&2; exit 3")
    assert (result.output, result.exit_code, result.finished, result.stop) == ("out\nerr\n", 3, True, None)


def test_the_traced_syscall_entry_counts_exactly_the_programs_calls(linux: LinuxSession) -> None:
    bp = linux.breakpoints.trace(ENTRY)
    assert bp.mechanism is Mechanism.PLUGIN_COUNTER and "TCG plugin" in bp.reason
    assert linux.shell("/bin/syscalls 1234").output == "made 1234 personality calls\n"
    assert bp.hit_count == 1234
    linux.shell("/bin/syscalls 66")
    assert bp.hit_count == 1300 == linux.hits.count(bp.number)


def test_a_breakpoint_at_the_entry_stops_with_the_callers_argument_in_its_register(linux: LinuxSession) -> None:
    bp = linux.breakpoints.add(ENTRY)
    result = linux.shell("/bin/syscalls 2")
    assert not result.finished and result.stop is not None
    assert (result.stop.reason, result.stop.breakpoint, result.stop.pc) == (StopReason.BREAKPOINT, bp.number, bp.address)
    assert result.stop.extra["cpu"] == 0
    # __x64_sys_personality(const struct pt_regs *regs): the user's registers
    # at the syscall, in rdi (arch/x86/include/asm/syscall_wrapper.h).
    regs = linux.regs["rdi"]
    assert linux.mem.read_int(regs + PT_REGS_ORIG_AX, 8) == NR_PERSONALITY
    assert linux.mem.read_int(regs + PT_REGS_DI, 8) == 0xFFFFFFFF
    with pytest.raises(SessionStateError, match="still runs '/bin/syscalls 2'"):
        linux.shell("true")
    linux.breakpoints.delete(bp.number)
    assert linux.wait_command().output == "made 2 personality calls\n"


def test_a_condition_moves_the_counted_tracepoint_to_a_stopping_one(linux: LinuxSession) -> None:
    bp = linux.breakpoints.trace(ENTRY)
    linux.breakpoints.set_condition(bp.number, lambda s: False)
    assert bp.mechanism is Mechanism.STUB_BREAKPOINT
    assert linux.shell("/bin/syscalls 3").finished and bp.hit_count == 0


def test_the_kernel_backtrace_is_the_system_call_path(linux: LinuxSession) -> None:
    needs_dwarf(linux)
    linux.breakpoints.add(ENTRY)
    linux.shell("/bin/syscalls 1")
    names = [linux.symbols.format_address(pc).split("+")[0] for pc in linux.backtrace()]
    assert names[:2] == [ENTRY, "do_syscall_64"]
    assert names[-1].startswith("entry_SYSCALL_64")


def test_the_frame_commands_see_the_frames_drgn_unwinds(linux: LinuxSession) -> None:
    needs_dwarf(linux)
    linux.breakpoints.add(ENTRY)
    linux.shell("/bin/syscalls 1")
    assert [frame.name for frame in linux.frame_list()] == [
        linux.symbols.format_address(pc).split("+")[0] for pc in linux.backtrace()]
    caller = linux.select_frame(1)
    assert caller.name == "do_syscall_64" and caller.physical.method.value.endswith("(drgn)")


def test_drgn_sees_the_stopped_program_as_the_running_task(linux: LinuxSession) -> None:
    needs_dwarf(linux)
    linux.breakpoints.add(ENTRY)
    linux.shell("/bin/syscalls 1")
    running = [t for t in linux.tasks() if t.comm == "syscalls"]
    assert len(running) == 1 and running[0].state == "R" and running[0].cpu == linux.cpu
    assert not running[0].kernel_thread
    assert f"Linux version {linux.release}" in linux.dmesg()


def test_a_pending_module_breakpoint_resolves_when_its_module_loads(linux: LinuxSession) -> None:
    init = linux.breakpoints.add("cpuid_init")
    opened = linux.breakpoints.add("cpuid_open")
    assert isinstance(opened, PendingBreakpoint) and opened.served_by == "pending"
    assert "no loaded code defines cpuid_open yet" in opened.reason
    result = linux.shell("insmod /lib/modules/cpuid.ko")
    if linux.vmlinux is not None:
        # Resolved at do_init_module, before the module's init function ran.
        assert result.stop is not None and result.stop.breakpoint == init.number
        assert result.stop.pc == linux.symbols.resolve("cpuid_init") == linux.breakpoints[init.number].address
        result = linux.wait_command()
    assert result.finished and result.ok, result.output
    real = linux.breakpoints[opened.number]
    assert opened.resolved is real and real.mechanism is Mechanism.STUB_BREAKPOINT
    (module,) = [m for m in _loaded(linux) if m[0] == "cpuid"]
    assert module[1] <= real.address < module[1] + module[2]
    stopped = linux.shell("dd if=/dev/cpu/0/cpuid bs=16 count=1 2>/dev/null | wc -c")
    assert stopped.stop is not None and stopped.stop.breakpoint == opened.number
    if linux.vmlinux is not None:
        names = [linux.symbols.format_address(pc).split("+")[0] for pc in linux.backtrace()]
        assert names[:2] == ["cpuid_open", "chrdev_open"]
    linux.breakpoints.delete(init.number)
    assert linux.wait_command().output.strip() == "16"
    assert linux.shell("rmmod cpuid").ok
    if linux.vmlinux is not None:  # free_module tells: pending again, until it loads again
        again = linux.breakpoints[opened.number]
        assert isinstance(again, PendingBreakpoint) and "module cpuid was unloaded" in again.reason


def _loaded(session: LinuxSession) -> list[tuple[str, int, int]]:
    """(name, base, size) of each module, from the guest's own /proc/modules."""
    rows = []
    for line in session.shell("cat /proc/modules").output.splitlines():
        fields = line.split()
        rows.append((fields[0], int(fields[5], 16), int(fields[1])))
    return rows


def test_a_command_past_its_timeout_is_killed_and_the_session_goes_on(linux: LinuxSession) -> None:
    with pytest.raises(CommandTimeout, match="did not finish within 1 s") as caught:
        linux.shell("echo started; sleep 30", timeout=1)
    assert "\n" not in str(caught.value)
    assert linux.command is None and linux.state.value == "stopped"
    assert linux.shell("echo alive").output == "alive\n"


@pytest.mark.parametrize(("arguments", "error", "message"), [
    ({"kernel": "/nonexistent/bzImage"}, KernelImageError, "kernel /nonexistent/bzImage: No such file"),
    ({"files": {"/bin/prog": "/nonexistent/prog"}}, InitramfsError, r"files: /nonexistent/prog \(for /bin/prog\) is not a file"),
    ({"files": ["/bin/prog"]}, UsageError, "files maps guest paths to host files"),
    ({"smp": 0}, UsageError, "smp is a number of CPUs"),
    ({"accel": "xen"}, UsageError, "accel must be 'auto', 'tcg' or 'kvm'"),
    ({"memory": "lots"}, KvmbenchError, "memory size 'lots'"),
])
def test_bad_boot_input_is_one_line_and_leaves_nothing_running(
        programs: dict[str, Path], arguments: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        kvmbench.linux(**arguments)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_bad_guest_files_are_refused_before_qemu_starts(tmp_path: Path) -> None:
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\n")
    with pytest.raises(InitramfsError, match="must be absolute"):
        kvmbench.linux(files={"bin/prog": program})


def test_the_notebook_commands_run_in_the_guest_and_read_its_kernel(linux: LinuxSession) -> None:
    from kvmbench.jupyter.commands import Workbench

    workbench = Workbench()
    workbench.session = linux
    view = workbench.run("linux", "echo from the guest")
    assert "from the guest" in view.text() and "exited with code 0" in view.text()
    if linux.vmlinux is not None:
        ps = workbench.execute("ps").text()
        assert "[kthreadd]" in ps and " init" in ps
        assert "Linux version" in workbench.execute("dmesg").text()
    with pytest.raises(SessionStateError, match="no guest command is running"):
        workbench.run("linux", "")


def test_without_dwarf_a_pending_breakpoint_resolves_after_the_command_that_loads_its_module(
        programs: dict[str, Path]) -> None:
    with kvmbench.linux(files=programs, modules=["cpuid"], vmlinux=False) as session:
        opened = session.breakpoints.add("cpuid_open")
        assert "after the shell command that loads its module" in opened.reason
        assert "make linux-debug" in opened.reason
        assert session.shell("insmod /lib/modules/cpuid.ko").ok
        real = session.breakpoints[opened.number]
        assert real.mechanism is Mechanism.STUB_BREAKPOINT and opened.resolved is real
        stopped = session.shell("dd if=/dev/cpu/0/cpuid bs=16 count=1 2>/dev/null | wc -c")
        assert stopped.stop is not None and stopped.stop.breakpoint == opened.number
        assert session.symbols.format_address(stopped.stop.pc) == "cpuid_open"
        with pytest.raises(KvmbenchError, match="needs the kernel's DWARF"):
            session.tasks()


def test_a_kernel_panic_ends_the_session_with_the_kernels_own_words(programs: dict[str, Path]) -> None:
    with kvmbench.linux(files=programs, modules=["cpuid"]) as session:
        result = session.shell("echo c > /proc/sysrq-trigger")
        assert not result.finished and result.stop is not None
        assert result.stop.reason is StopReason.EXITED
        assert "Kernel panic - not syncing: sysrq triggered crash" in result.stop.detail
        with pytest.raises(SessionStateError, match="exited"):
            session.shell("true")
