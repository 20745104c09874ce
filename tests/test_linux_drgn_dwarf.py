"""drgn with DWARF over the live guest: the task list and the kernel log,
which need types. Debian's vmlinux with DWARF comes from its -dbg package
(~860 MB): `make linux-debug` fetches it; without it these tests skip."""

from __future__ import annotations

import shutil

import pytest

from kvmbench.backends.linux.image import KernelImageError, debian_kernel
from kvmbench.backends.linux.kernel_program import dmesg, tasks
from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def program():
    try:
        image = debian_kernel(fetch=False)
    except KernelImageError as exc:
        pytest.skip(str(exc))
    debug = image.path.with_name("vmlinux.debug")
    if not debug.exists():
        pytest.skip("no vmlinux with DWARF in the cache: run make linux-debug (~860 MB download)")
    machine = LinuxMachine.boot(LinuxOptions())
    yield machine, machine.program(vmlinux=debug)
    machine.close()


def test_the_task_list_has_init_and_the_kernel_threads(program) -> None:
    machine, drgn_program = program
    listed = dict(tasks(drgn_program))
    assert listed[1] == "init"
    assert listed[2] == "kthreadd"
    comms = machine.read_file("/proc/2/comm").decode().strip()
    assert comms == "kthreadd"


def test_dmesg_read_from_memory_has_the_boot_banner(program) -> None:
    machine, drgn_program = program
    log = dmesg(drgn_program)
    assert f"Linux version {machine.release}" in log
