"""drgn with DWARF over the live guest: the task list and the kernel log,
which need types. Debian's vmlinux with DWARF comes from its -dbg package
(~860 MB): `make linux-debug` fetches it; without it these tests skip."""

from __future__ import annotations

import shutil

import pytest

from fixtures.linux.guest import shared_options

from kvmbench.backends.linux.image import debian_kernel
from kvmbench.backends.linux.kernel_program import dmesg, tasks
from kvmbench.backends.linux.machine import LinuxMachine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory):
    options = shared_options(tmp_path_factory.mktemp("dwarf"))
    debug = debian_kernel(fetch=False).path.with_name("vmlinux.debug")
    if not debug.exists():
        pytest.skip("no vmlinux with DWARF in the cache: run make linux-debug (~860 MB download)")
    machine = LinuxMachine.boot(options)
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
