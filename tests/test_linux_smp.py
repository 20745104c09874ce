"""Two vCPUs under multi-threaded TCG: the counting plugin's atomic mode
keeps counts exact while both run the counted code at once."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kvmbench.backends.linux.image import KernelImageError, debian_kernel
from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]

FIXTURES = Path(__file__).parent / "fixtures" / "linux"


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory):
    try:
        debian_kernel(fetch=False)
    except KernelImageError as exc:
        pytest.skip(str(exc))
    binary = tmp_path_factory.mktemp("smp") / "syscalls"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(FIXTURES / "syscalls.c")], check=True)
    machine = LinuxMachine.boot(LinuxOptions.make(smp=2, files={"/bin/syscalls": binary}), counting=True)
    yield machine
    machine.close()


def test_the_guest_has_two_cpus_and_the_counter_is_atomic(machine) -> None:
    assert machine.shell("nproc").output.strip() == "2"
    assert machine.counter.atomic


def test_counts_stay_exact_with_both_cpus_in_the_counted_code(machine) -> None:
    entry = machine.symbols().get_by_name("__x64_sys_personality").address
    machine.counter.add(entry)
    result = machine.shell(
        "taskset 1 /bin/syscalls 30000 & taskset 2 /bin/syscalls 30000 & wait", timeout=300
    )
    assert result.output.count("made 30000 personality calls") == 2
    assert machine.counter.count(entry) == 60000
