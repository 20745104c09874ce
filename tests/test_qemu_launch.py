"""The QEMU launcher: a real qemu-system-x86_64 started stopped, reached
through its sockets, its guest's exit code decoded, and never left behind.

The guest is tests/fixtures/qemu/counter.S, a PVH ELF assembled here: it
prints "K", counts `counter` up to 100,000,000 and exits with code 42.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, Qemu, QemuOptions, decode_exit_status, kvm_accel_usable
from kvmbench.errors import KvmbenchError, QemuError

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")

FIXTURE = Path(__file__).parent / "fixtures" / "qemu" / "counter.S"
COUNTER_LIMIT = 100_000_000
GUEST_EXIT_CODE = 42


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The counter guest's ELF and the physical address of its counter."""
    out = tmp_path_factory.mktemp("qemu-guest")
    obj, elf = out / "counter.o", out / "counter.elf"
    subprocess.run(["as", "--32", "-o", str(obj), str(FIXTURE)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-o", str(elf), str(obj)], check=True)
    nm = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    address = next(int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" counter"))
    return elf, address


@pytest.fixture
def start(guest: tuple[Path, int]):
    """``start(**options)``: a Qemu on the counter guest, closed after the test."""
    started: list[Qemu] = []

    def start_(**kw: object) -> Qemu:
        kw.setdefault("kernel", guest[0])
        kw.setdefault("devices", (DEBUG_EXIT_DEVICE,))
        qemu = Qemu.start(QemuOptions(**kw))  # type: ignore[arg-type]
        started.append(qemu)
        return qemu

    yield start_
    for qemu in started:
        qemu.close()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it no longer runs.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.02)
    return False


def read_counter(qemu: Qemu, address: int) -> int:
    return struct.unpack("<I", qemu.read_physical(address, 4))[0]


def test_without_qmp_events_qmp_connects_only_when_first_used(guest) -> None:
    # QEMU sends STOP/RESUME events to every connected monitor at each
    # gdbstub stop; a debugger's QEMU keeps no monitor until it needs one.
    def monitors() -> int:
        return sum(t.name == "kvmbench-qmp" for t in threading.enumerate())

    before = monitors()
    qemu = Qemu.start(QemuOptions(kernel=guest[0], devices=(DEBUG_EXIT_DEVICE,)), qmp_events=False)
    try:
        assert monitors() == before
        assert qemu.status() == "prelaunch"
        assert monitors() == before + 1
    finally:
        qemu.close()


def test_qemu_starts_stopped_before_the_first_instruction(start) -> None:
    qemu = start()
    assert qemu.status() == "prelaunch"
    time.sleep(0.2)
    assert "K" not in qemu.console


def test_guest_exit_code_comes_from_isa_debug_exit(start) -> None:
    qemu = start()
    qemu.cont()
    assert qemu.wait_exit(60) == GUEST_EXIT_CODE
    assert qemu.exit_status == (GUEST_EXIT_CODE << 1) | 1


def test_console_is_read_and_handed_to_the_callback(guest) -> None:
    seen: list[str] = []
    with Qemu.start(QemuOptions(kernel=guest[0], devices=(DEBUG_EXIT_DEVICE,)), on_console=seen.append) as qemu:
        qemu.cont()
        qemu.wait_for_console("K\n", 30)
        qemu.wait_exit(60)
    assert "K\n" in "".join(seen)


def test_wait_exit_returns_none_while_the_guest_runs(start) -> None:
    qemu = start()
    assert qemu.wait_exit(0.1) is None


def test_stop_freezes_the_guest_and_cont_resumes_it(start, guest) -> None:
    qemu = start()
    qemu.cont()
    qemu.wait_for_console("K", 30)
    qemu.stop()
    assert qemu.status() == "paused"
    frozen = read_counter(qemu, guest[1])
    time.sleep(0.1)
    assert read_counter(qemu, guest[1]) == frozen
    qemu.cont()
    time.sleep(0.1)
    assert read_counter(qemu, guest[1]) > frozen or qemu.exited


def test_snapshot_resumes_where_it_was_saved(start, guest, tmp_path: Path) -> None:
    qemu = start()
    qemu.cont()
    qemu.wait_for_console("K", 30)
    time.sleep(0.02)
    snapshot = tmp_path / "counter.snap"
    qemu.save_snapshot(snapshot)
    assert qemu.status() == "postmigrate"
    saved = read_counter(qemu, guest[1])
    assert 0 < saved < COUNTER_LIMIT
    qemu.close()

    restored = start(incoming=snapshot)
    assert restored.status() == "paused"
    assert read_counter(restored, guest[1]) == saved
    restored.cont()
    assert restored.wait_exit(60) == GUEST_EXIT_CODE
    assert "K" not in restored.console  # it went on; it did not boot again


def test_gdbstub_answers_on_its_unix_socket(start) -> None:
    qemu = start()
    assert qemu.gdb_address.startswith("unix:")
    with socket.socket(socket.AF_UNIX) as gdb:
        gdb.settimeout(5)
        gdb.connect(qemu.gdb_address.removeprefix("unix:"))
        gdb.sendall(b"$?#3f")  # GDB manual, "Packets": '?' asks why the target halted
        reply = b""
        while b"#" not in reply.lstrip(b"+"):
            reply += gdb.recv(100)
    assert reply.lstrip(b"+").startswith((b"$T05", b"$S05"))


def test_qmp_can_be_called_from_many_threads_at_once(start) -> None:
    qemu = start()
    results: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            for _ in range(20):
                results.append(qemu.status())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == ["prelaunch"] * 80


def test_a_refused_qmp_command_is_a_one_line_error(start) -> None:
    qemu = start()
    with pytest.raises(QemuError) as info:
        qemu.qmp("no-such-command")
    assert "no-such-command" in str(info.value) and "\n" not in str(info.value)


def test_close_is_idempotent_and_ends_qemu(start) -> None:
    qemu = start()
    pid = qemu.pid
    directory = qemu.directory
    qemu.close()
    qemu.close()
    assert not process_alive(pid)
    assert not directory.exists()
    with pytest.raises(QemuError):
        qemu.status()


def test_missing_binary_is_a_clear_error(guest) -> None:
    with pytest.raises(QemuError, match="qemu-system-nonesuch not found: install"):
        Qemu.start(QemuOptions(kernel=guest[0], binary="qemu-system-nonesuch"))


def test_qemu_failing_at_start_shows_its_last_stderr_line(guest) -> None:
    with pytest.raises(QemuError) as info:
        Qemu.start(QemuOptions(kernel=guest[0], devices=("no-such-device",)))
    message = str(info.value)
    assert message.startswith("QEMU exited at start")
    assert "'no-such-device' is not a valid device model name" in message
    assert "\n" not in message


def test_sockets_that_never_appear_time_out(guest, tmp_path: Path) -> None:
    silent = tmp_path / "silent-qemu"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(QemuError, match="did not create its sockets within 0.5 s"):
        Qemu.start(QemuOptions(kernel=guest[0], binary=str(silent)), socket_timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_missing_kernel_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QemuError, match="kernel .* does not exist"):
        Qemu.start(QemuOptions(kernel=tmp_path / "nope"))


def test_qemu_dies_with_the_python_process_that_started_it(guest) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from kvmbench.backends.qemu import Qemu, QemuOptions
        qemu = Qemu.start(QemuOptions(kernel={str(guest[0])!r}))
        print(qemu.pid, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        assert process_alive(pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert wait_gone(pid), "QEMU outlived the Python process that started it"
    finally:
        child.kill()
        child.wait()


def test_qemu_started_from_a_short_lived_thread_outlives_the_thread(guest) -> None:
    started: list[Qemu] = []
    thread = threading.Thread(target=lambda: started.append(Qemu.start(QemuOptions(kernel=guest[0]))))
    thread.start()
    thread.join(30)
    qemu = started[0]
    try:
        time.sleep(0.3)
        assert process_alive(qemu.pid)
        assert qemu.status() == "prelaunch"
    finally:
        qemu.close()


def test_exit_status_decoding() -> None:
    assert decode_exit_status((7 << 1) | 1) == 7
    assert decode_exit_status(0) == 0
    with pytest.raises(QemuError, match="exit status 2"):
        decode_exit_status(2)
    with pytest.raises(QemuError, match="SIGKILL"):
        decode_exit_status(-9)


def test_kvm_accel_check_gives_a_reason_in_one_line() -> None:
    usable, reason = kvm_accel_usable()
    assert reason and "\n" not in reason
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    if not {"vmx", "svm"} & set(flags):
        assert not usable
    if os.path.isdir("/sys/module/kvm_pvm") and not usable:
        assert "kvm_pvm" in reason


def test_kvm_accel_is_refused_where_it_is_not_usable(guest) -> None:
    usable, reason = kvm_accel_usable()
    if usable:
        pytest.skip(f"KVM is usable here: {reason}")
    with pytest.raises(QemuError, match="accel='kvm' is not usable here"):
        Qemu.start(QemuOptions(kernel=guest[0], accel="kvm"))


def test_errors_are_kvmbench_errors() -> None:
    assert issubclass(QemuError, KvmbenchError)


def test_memory_reads_guest_ram_while_it_runs(start, guest) -> None:
    qemu = start()
    qemu.cont()
    qemu.wait_for_console("K", 30)
    first = read_counter(qemu, guest[1])
    time.sleep(0.05)
    second = read_counter(qemu, guest[1])
    assert second > first or qemu.exited


def test_memory_reads_agree_with_qmp_pmemsave_and_hmp_xp(start, guest) -> None:
    qemu = start()
    qemu.cont()
    qemu.wait_for_console("K", 30)
    qemu.stop()
    ours = qemu.read_physical(guest[1], 4)
    assert qemu.pmemsave(guest[1], 4) == ours
    xp = qemu.qmp("human-monitor-command", **{"command-line": f"xp /1wx {guest[1]:#x}"})
    assert int(xp.split()[-1], 16) == struct.unpack("<I", ours)[0]


def test_memory_outside_ram_is_a_clear_error(start) -> None:
    from kvmbench.errors import GuestMemoryError

    qemu = start()
    with pytest.raises(GuestMemoryError, match="not in RAM"):
        qemu.read_physical(0xFFFF_0000_0000, 8)


def test_memory_sizes_read_as_qemu_reads_them() -> None:
    from kvmbench.backends.qemu import memory_bytes

    assert memory_bytes("512M") == 512 << 20
    assert memory_bytes("2G") == 2 << 30
    assert memory_bytes("256") == 256 << 20
    with pytest.raises(QemuError):
        memory_bytes("lots")
