"""A real Linux kernel (Debian's) under QEMU TCG with kvmbench's init:
the shell, the channel's framing, snapshots, symbols, VMCOREINFO, drgn and
the counting plugin. One boot serves the whole module (cold the first time
on a machine, from the cached snapshot after that)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from fixtures.linux.guest import shared_options

from kvmbench.backends.linux.channel import CommandTimeout
from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> LinuxOptions:
    return shared_options(tmp_path_factory.mktemp("linux-programs"))


@pytest.fixture(scope="module")
def machine(options: LinuxOptions):
    machine = LinuxMachine.boot(options, counting=True)
    yield machine
    machine.close()


def test_shell_returns_stdout_and_stderr_in_order_and_the_exit_code(machine) -> None:
    result = machine.shell("echo out; echo err >&2; exit 3")
    assert result.output == "out\nerr\n"
    assert result.exit_code == 3 and not result.ok


def test_the_guest_is_left_stopped_after_a_command(machine) -> None:
    machine.shell("true")
    assert machine.qemu.status() == "paused"


def test_output_that_looks_like_the_protocol_is_only_output(machine) -> None:
    # A whole fake exit-status message: header "KVB" 'X', length 4, status 0.
    fake = "KVBX\\004\\000\\000\\000\\000\\000\\000\\000"
    result = machine.shell(f"printf '{fake}'; printf after; exit 5")
    assert result.output == "KVBX\x04\x00\x00\x00\x00\x00\x00\x00after"
    assert result.exit_code == 5


def test_large_output_arrives_whole(machine) -> None:
    result = machine.shell("seq 1 20000")
    assert result.output == "".join(f"{n}\n" for n in range(1, 20001))


def test_a_command_past_its_timeout_is_killed_and_the_shell_goes_on(machine) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="did not finish within 1 s"):
        machine.shell("echo started; sleep 30", timeout=1)
    assert time.monotonic() - started < 10
    assert machine.shell("echo alive").output == "alive\n"


def test_files_given_at_boot_are_in_the_guest(machine) -> None:
    assert machine.shell("/bin/syscalls 3").output == "made 3 personality calls\n"


def test_a_guest_file_is_read_through_the_init(machine) -> None:
    assert machine.read_file("/proc/sys/kernel/kptr_restrict") == b"0\n"
    assert machine.read_file("/proc/sys/kernel/osrelease").decode().strip() == machine.release


def test_vmcoreinfo_found_in_memory_is_where_the_guest_says(machine) -> None:
    address, size = machine.read_file("/sys/kernel/vmcoreinfo").split()
    found = machine.vmcoreinfo()
    assert found.physical_address == int(address, 16)
    assert found.osrelease == machine.release


def test_kaslr_slide_from_kallsyms_equals_vmcoreinfos(machine) -> None:
    # PVH boots skip the decompressor that randomises: both say 0 here;
    # test_linux_kaslr.py checks a bzImage boot with a real slide.
    assert machine.kaslr_slide_from_kallsyms() == machine.vmcoreinfo().kernel_offset


def test_symbols_from_guest_memory_match_the_guests_proc_kallsyms(machine) -> None:
    names = ["_text", "do_sys_openat2", "__x64_sys_personality", "init_task", "jiffies_64"]
    pattern = " ".join(f"-e {name}" for name in names)
    lines = machine.shell(f"grep -F -w {pattern} /proc/kallsyms", timeout=120).output.splitlines()
    theirs = {}
    for line in lines:
        address, _, name = line.split()[:3]
        theirs.setdefault(name, int(address, 16))
    table = machine.symbols()
    for name in names:
        assert table.get_by_name(name) is not None, name
        assert table.get_by_name(name).address == theirs[name], name


def test_drgn_reads_the_kernel_release_through_the_kernels_page_tables(machine) -> None:
    info = machine.vmcoreinfo()
    program = machine.program()
    uts = info.symbol("init_uts_ns")
    name = info.fields["OFFSET(uts_namespace.name)"]
    # struct new_utsname: sysname, nodename, release, each char[65] (include/uapi/linux/utsname.h)
    release = program.read(uts + int(name, 16) + 2 * 65, 65).split(b"\0", 1)[0].decode()
    assert release == machine.shell("uname -r").output.strip()


def test_drgn_symbols_come_from_the_kernels_own_kallsyms(machine) -> None:
    program = machine.program()
    assert program.symbol("do_sys_openat2").address == machine.symbols().get_by_name("do_sys_openat2").address


def test_plugin_counts_a_syscalls_kernel_entry_exactly(machine) -> None:
    entry = machine.symbols().get_by_name("__x64_sys_personality").address
    machine.counter.add(entry)
    before = machine.counter.count(entry)
    machine.shell("/bin/syscalls 1000")
    assert machine.counter.count(entry) - before == 1000
    machine.shell("/bin/syscalls 2345")
    assert machine.counter.count(entry) - before == 3345


def test_a_removed_address_is_no_longer_counted(machine) -> None:
    entry = machine.symbols().get_by_name("__x64_sys_personality").address
    machine.counter.add(entry)
    machine.counter.remove(entry)
    machine.shell("/bin/syscalls 10")
    assert machine.counter.count(entry) == 0
    assert entry not in machine.counter.counts()


def test_the_counts_are_read_while_the_guest_runs(machine) -> None:
    entry = machine.symbols().get_by_name("__x64_sys_personality").address
    machine.counter.add(entry)
    start = machine.counter.count(entry)
    command = machine.start_shell("/bin/syscalls 200000")
    machine.qemu.cont()
    try:
        deadline = time.monotonic() + 60
        while machine.counter.count(entry) == start and time.monotonic() < deadline:
            time.sleep(0.01)
        assert machine.qemu.status() == "running"
        seen = machine.counter.count(entry) - start
        assert 0 < seen
        result = command.wait(120)
    finally:
        machine.qemu.stop()
    assert result.output == "made 200000 personality calls\n"
    assert machine.counter.count(entry) - start == 200000 >= seen


def test_nothing_else_uses_the_channel_while_a_command_runs(machine) -> None:
    from kvmbench.errors import SessionStateError

    command = machine.start_shell("sleep 0.2")
    with pytest.raises(SessionStateError, match="still runs 'sleep 0.2'"):
        machine.shell("true")
    machine.qemu.cont()
    try:
        assert command.wait(30).ok
    finally:
        machine.qemu.stop()


def test_a_module_from_debians_package_loads_and_its_symbols_are_found(machine) -> None:
    assert machine.shell("insmod /lib/modules/cpuid.ko || grep -q '^cpuid ' /proc/modules").ok
    (cpuid,) = [module for module in machine.loaded_modules() if module.name == "cpuid"]
    assert cpuid.state == "Live"
    opener = machine.module_symbols().get_by_name("cpuid_open")
    assert opener is not None and cpuid.contains(opener.address)


def test_a_second_session_starts_from_the_snapshot(machine, options) -> None:
    with LinuxMachine.boot(options) as second:
        assert second.from_snapshot
        assert second.times.total < 10  # the goal is < 0.5 s: measured by the benchmark
        assert second.shell("echo again").output == "again\n"
        assert second.symbols().get_by_name("_text").address == machine.symbols().get_by_name("_text").address
