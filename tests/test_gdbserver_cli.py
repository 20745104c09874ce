"""``kvmbench gdbserver``'s command line: its address, its warnings, its
refusals, each in one line."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from kvmbench.errors import UsageError
from kvmbench.gdbserver.server import is_loopback, parse_listen


@pytest.mark.parametrize(("text", "expected"), [
    ("1234", ("127.0.0.1", 1234)), (":0", ("127.0.0.1", 0)), ("0.0.0.0:99", ("0.0.0.0", 99)),
    ("[::1]:5", ("::1", 5)), ("localhost:7", ("localhost", 7)),
])
def test_listen_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["nope:x", "70000", "[::1]5", "1.2.3.4:"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_listen(text)


def test_only_loopback_addresses_count_as_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.1")


def test_a_bad_listen_address_is_one_line_and_status_2() -> None:
    done = subprocess.run([sys.executable, "-m", "kvmbench", "gdbserver", "hello", "--listen", "nope:x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["kvmbench: --listen 'nope:x': 'x' is not a port number"]


def _start(listen: str, tmp_path) -> tuple[subprocess.Popen[str], int, str]:  # type: ignore[no-untyped-def]
    errors = tmp_path / "stderr.txt"
    process = subprocess.Popen([sys.executable, "-m", "kvmbench", "gdbserver", "spin", "--listen", listen],
                               stdout=subprocess.DEVNULL, stderr=errors.open("w"), text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"listening on [\d.]+:(\d+)", errors.read_text())
        if match:
            return process, int(match.group(1)), errors.read_text()
        time.sleep(0.05)
    process.kill()
    raise AssertionError(errors.read_text())


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(10)


def test_a_non_loopback_address_is_served_with_a_warning(tmp_path, caps) -> None:
    process, _, stderr = _start("0.0.0.0:0", tmp_path)
    try:
        assert "warning: listening on 0.0.0.0, not loopback" in stderr
    finally:
        assert _stop(process) == 0


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_second_gdb_is_told_another_debugger_is_attached(tmp_path, caps) -> None:
    process, port, _ = _start("127.0.0.1:0", tmp_path)
    first = subprocess.Popen(["gdb", "-batch", "-nx", "-ex", f"target remote 127.0.0.1:{port}",
                              "-ex", "echo ATTACHED\\n", "-ex", "shell sleep 3"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert first.stdout is not None
        # Waited for, not slept for: on a loaded machine gdb takes its time to attach.
        seen = "".join(itertools.takewhile(lambda line: "ATTACHED" not in line, first.stdout))
        assert first.poll() is None, f"the first gdb did not attach: {seen}"
        second = subprocess.run(["gdb", "-batch", "-nx", "-ex", f"target remote 127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
        assert "another debugger (127.0.0.1:" in second.stdout + second.stderr
        assert "one client at a time" in second.stdout + second.stderr
    finally:
        first.wait(30)
        assert _stop(process) == 0
