"""Two vCPUs under multi-threaded TCG: the counting plugin's atomic mode
keeps counts exact while both run the counted code at once, and in a
kernel session a breakpoint fires on either CPU and its stop names the CPU
(QEMU's gdbstub reports vCPUs as threads)."""

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


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    import kvmbench
    from fixtures.linux.guest import build_syscalls

    shared_options(tmp_path_factory.mktemp("smp-session"))  # skips without a cached kernel
    programs = {"/bin/syscalls": build_syscalls(tmp_path_factory.mktemp("smp-programs"))}
    session = kvmbench.linux(files=programs, modules=["cpuid"], smp=2)
    yield session
    session.close()


@pytest.mark.parametrize("cpu", [0, 1])
def test_a_breakpoint_fires_on_the_cpu_the_program_runs_on_and_the_stop_names_it(session, cpu: int) -> None:
    assert len(session.target.client.threads()) == 2
    bp = session.breakpoints.add("__x64_sys_personality")
    try:
        result = session.shell(f"taskset {1 << cpu} /bin/syscalls 1")
        assert result.stop is not None and result.stop.breakpoint == bp.number
        assert result.stop.extra["cpu"] == session.cpu == cpu
    finally:
        session.breakpoints.delete(bp.number)
    assert session.wait_command().output == "made 1 personality calls\n"


def test_the_plugin_counter_stays_exact_with_both_cpus_in_the_traced_code(session) -> None:
    bp = session.breakpoints.trace("__x64_sys_personality")
    result = session.shell("taskset 1 /bin/syscalls 20000 & taskset 2 /bin/syscalls 20000 & wait", timeout=300)
    assert result.output.count("made 20000 personality calls") == 2
    assert bp.served_by == "plugin counter" and bp.hit_count == 40000
    session.breakpoints.delete(bp.number)
