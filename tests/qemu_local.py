"""A stand-in QEMU launcher for tests, until kvmbench/backends/qemu.py
(branch ``linux``) reaches main; then these tests use that and this file
goes. Same shape as that API: ``start`` (optionally stopped with -S and a
gdbstub on a Unix socket in a private directory), ``gdb_address``,
``console``, ``wait_exit`` (the guest's own code from isa-debug-exit),
``close`` (idempotent, kills the process group).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

QEMU = shutil.which("qemu-system-x86_64")
NO_QEMU_REASON = "qemu-system-x86_64 is not installed"


class LocalQemu:
    def __init__(self, process: subprocess.Popen[bytes], directory: Path, gdb: bool) -> None:
        self.process = process
        self.directory = directory
        self._console = directory / "console.txt"
        self.gdb_address = f"unix:{directory / 'gdb.sock'}" if gdb else None
        self._closed = False

    @classmethod
    def start(
        cls, kernel: Path, append: str, *, paused: bool = False, gdb: bool = False, accel: str = "tcg", smp: int = 1
    ) -> "LocalQemu":
        assert QEMU is not None, NO_QEMU_REASON
        directory = Path(tempfile.mkdtemp(prefix="kvmbench-qemu-"))
        argv = [
            QEMU, "-accel", accel, "-nodefaults", "-display", "none", "-no-reboot", "-m", "64", "-smp", str(smp),
            "-kernel", str(kernel), "-append", append,
            "-serial", f"file:{directory / 'console.txt'}",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
        ]  # fmt: skip
        if gdb:
            argv += ["-chardev", f"socket,id=gdb0,path={directory / 'gdb.sock'},server=on,wait=off", "-gdb", "chardev:gdb0"]
        if paused:
            argv.append("-S")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        qemu = cls(process, directory, gdb)
        if gdb:
            deadline = time.monotonic() + 10
            while not (directory / "gdb.sock").exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    qemu.close()
                    raise RuntimeError("QEMU did not open its gdbstub socket")
                time.sleep(0.01)
        return qemu

    @property
    def console(self) -> str:
        try:
            return self._console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        """The guest's exit code (isa-debug-exit: QEMU exits (code << 1) | 1),
        -1 if QEMU ended otherwise (a triple fault under -no-reboot exits 0),
        or None if QEMU still runs after ``timeout`` seconds."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return status >> 1 if status > 0 and status & 1 else -1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)
