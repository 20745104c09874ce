"""Two vCPUs under multi-threaded TCG: the counting plugin's atomic mode
keeps counts exact while both run the counted code at once."""

from __future__ import annotations

import shutil

import pytest
from fixtures.linux.guest import shared_options

from kvmbench.backends.linux.machine import LinuxMachine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory):
    options = shared_options(tmp_path_factory.mktemp("smp"), smp=2)
    machine = LinuxMachine.boot(options, counting=True)
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
