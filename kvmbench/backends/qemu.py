"""Launching qemu-system-x86_64 for a debug session.

QEMU starts stopped before the guest's first instruction (``-S``), with no
display, in its own process group, and dies with the Python process that
started it. Everything it offers is reached through Unix sockets in a
private temporary directory:

- the gdbstub (``Qemu.gdb_address``, ``"unix:PATH"``) for the GDB remote
  client;
- QMP, driven through the ``qemu.qmp`` package (``Qemu.qmp``) for run state,
  physical memory reads and migration snapshots;
- the serial console (``Qemu.console``, ``on_console``) and any extra serial
  ports a caller names (``QemuOptions.serials``, ``Qemu.serial_path``).

A guest ends its run by writing its exit code to the ``isa-debug-exit``
device, which makes QEMU exit with status ``(code << 1) | 1``
(hw/misc/debugexit.c); :meth:`Qemu.wait_exit` decodes it.

A snapshot is a QMP ``migrate`` to a file (docs/devel/migration.rst: the
``exec:`` transport, since QEMU 7.2 has no ``file:`` one) and a later QEMU
with the same options plus ``incoming=`` starts from it.
"""

from __future__ import annotations

import asyncio
import collections
import codecs
import ctypes
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmbench.errors import GuestMemoryError, QemuError

__all__ = [
    "PluginSpec",
    "QemuOptions",
    "Qemu",
    "kvm_accel_usable",
    "decode_exit_status",
    "DEBUG_EXIT_DEVICE",
    "GuestMemory",
    "memory_bytes",
]

QEMU_BINARY = "qemu-system-x86_64"

#: The exit device the bundled guests and the Linux init write to: port
#: 0xf4, as the kvm backend's guests use, 4 bytes wide.
DEBUG_EXIT_DEVICE = "isa-debug-exit,iobase=0xf4,iosize=4"

#: How long QEMU may take to create its sockets before start gives up.
SOCKET_TIMEOUT = 15.0
#: How long one QMP command may take (a migration is polled, not awaited).
QMP_TIMEOUT = 30.0
#: The console keeps at most this many characters (the newest).
CONSOLE_LIMIT = 1 << 20
#: How long the console reader may take to pass on QEMU's last output once QEMU exited.
CONSOLE_DRAIN_TIMEOUT = 2.0
#: Lines of QEMU's stderr kept for error messages.
STDERR_LINES = 50

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# qemu.qmp logs a failed connection at ERROR level; without a handler of its
# own Python's last-resort handler would print it beside our one-line error.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class PluginSpec:
    """A TCG plugin and its arguments (``-plugin file=PATH,NAME=VALUE``,
    the QEMU 7.2 syntax of docs/devel/tcg-plugins.rst)."""

    path: Path
    args: tuple[tuple[str, str], ...] = ()

    def argument(self) -> str:
        parts = [f"file={self.path}"]
        for name, value in self.args:
            if "," in name or "," in value:
                raise QemuError(f"plugin argument {name}={value!r} contains a comma")
            parts.append(f"{name}={value}")
        return ",".join(parts)


@dataclass(frozen=True)
class QemuOptions:
    """How to start QEMU.

    ``kernel`` is an ELF with a PVH note (an uncompressed vmlinux, a
    bundled guest) or a bzImage; ``None`` boots no kernel (firmware only).
    ``devices`` are extra ``-device`` specs (e.g. :data:`DEBUG_EXIT_DEVICE`),
    ``serials`` names extra serial ports (ttyS1, ttyS2, ... in that order)
    that are served as Unix sockets (see :meth:`Qemu.serial_path`).
    ``incoming`` starts from a snapshot that :meth:`Qemu.save_snapshot`
    wrote with the same options otherwise.
    """

    kernel: Path | None
    initrd: Path | None = None
    append: str = ""
    accel: str = "tcg"
    memory: str = "512M"
    smp: int = 1
    devices: tuple[str, ...] = ()
    plugins: tuple[PluginSpec, ...] = ()
    incoming: Path | None = None
    extra_args: tuple[str, ...] = ()
    serials: tuple[str, ...] = ()
    machine: str = "pc"
    binary: str = QEMU_BINARY

    def command_line(self, directory: Path) -> list[str]:
        """The argv of a QEMU with its sockets in ``directory``."""
        if self.accel not in ("tcg", "kvm"):
            raise QemuError(f"accel must be 'tcg' or 'kvm', not {self.accel!r}")
        if self.smp < 1:
            raise QemuError(f"smp must be at least 1, not {self.smp}")
        for path, what in ((self.kernel, "kernel"), (self.initrd, "initrd"), (self.incoming, "snapshot")):
            if path is not None and not Path(path).is_file():
                raise QemuError(f"{what} {path} does not exist")
        if self.initrd is not None and self.kernel is None:
            raise QemuError("an initrd needs a kernel")
        # Several vCPUs under TCG run on a thread each (MTTCG), as under KVM.
        accel = "tcg,thread=multi" if self.accel == "tcg" and self.smp > 1 else self.accel
        argv = [
            self.binary,
            "-S",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-machine", self.machine,
            "-accel", accel,
            "-m", self.memory,
            "-smp", str(self.smp),
            "-chardev", f"socket,id=qmp,path={directory / 'qmp.sock'},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"socket,id=gdb,path={directory / 'gdb.sock'},server=on,wait=off",
            "-gdb", "chardev:gdb",
            "-chardev", f"socket,id=console,path={directory / 'console.sock'},server=on,wait=off",
            "-serial", "chardev:console",
        ]
        for name in self.serials:
            _check_name(name)
            argv += [
                "-chardev", f"socket,id=serial-{name},path={directory / (name + '.sock')},server=on,wait=off",
                "-serial", f"chardev:serial-{name}",
            ]
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel)]
            if self.initrd is not None:
                argv += ["-initrd", str(self.initrd)]
            if self.append:
                argv += ["-append", self.append]
        for device in self.devices:
            argv += ["-device", device]
        for plugin in self.plugins:
            argv += ["-plugin", plugin.argument()]
        if self.incoming is not None:
            argv += ["-incoming", "exec:cat " + shlex.quote(str(self.incoming))]
        argv += list(self.extra_args)
        return argv

    def socket_names(self) -> list[str]:
        return ["qmp", "gdb", "console", *self.serials]


def memory_bytes(size: str) -> int:
    """QEMU's ``-m`` size in bytes: a number with an optional K/M/G/T
    suffix, megabytes when there is none (docs/system/invocation.rst)."""
    text = size.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if text and text[-1] in scale:
            return int(float(text[:-1]) * scale[text[-1]])
        return int(float(text) * (1 << 20))
    except ValueError:
        raise QemuError(f"memory size {size!r} is not a number with K, M, G or T") from None


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_" for c in name) or name in ("qmp", "gdb", "console"):
        raise QemuError(f"serial port name {name!r}: use letters, digits, - and _ (not qmp/gdb/console)")


def decode_exit_status(status: int) -> int:
    """The guest's exit code from QEMU's exit status.

    isa-debug-exit makes QEMU exit with ``(value << 1) | 1``
    (hw/misc/debugexit.c); a clean QEMU exit (the guest powered off, or QMP
    ``quit``) is 0 and reads as the guest's 0. Other statuses are QEMU's
    own failures and raise :class:`QemuError`.
    """
    if status < 0:
        raise QemuError(f"QEMU was killed by signal {signal.Signals(-status).name}")
    if status & 1:
        return status >> 1
    if status == 0:
        return 0
    raise QemuError(f"QEMU failed with exit status {status}")


def kvm_accel_usable() -> tuple[bool, str]:
    """Whether ``accel="kvm"`` can run guests at hardware speed here.

    QEMU's KVM accelerator needs /dev/kvm backed by VMX or SVM (kvm_intel,
    kvm_amd). A paravirtual KVM such as kvm_pvm has neither: it emulates
    guest instructions one by one, far slower than TCG, so it does not count.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm on this machine"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    modules = {name for name in ("kvm_intel", "kvm_amd", "kvm_pvm") if os.path.isdir(f"/sys/module/{name}")}
    try:
        flags = set()
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = set()
    if modules & {"kvm_intel", "kvm_amd"} and flags & {"vmx", "svm"}:
        return True, "/dev/kvm is backed by " + " and ".join(sorted(modules & {"kvm_intel", "kvm_amd"}))
    if "kvm_pvm" in modules:
        return False, (
            "/dev/kvm is kvm_pvm (no VMX/SVM on this CPU): it emulates guest instructions"
            " (~1.6 us each), far slower than TCG"
        )
    return False, "the CPU offers no VMX/SVM to /dev/kvm (no kvm_intel or kvm_amd module)"


class _Spawner:
    """A thread that lives as long as the process and forks every QEMU.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits
    (prctl(2)), not the process: a QEMU forked from a worker thread
    (asyncio.to_thread, a thread pool) would be killed when that worker
    retires. Forking from one daemon thread ties QEMU to the process.
    """

    _lock = threading.Lock()
    _instance: "_Spawner | None" = None

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._serve, name="kvmbench-qemu-spawner", daemon=True)
        self._thread.start()

    @classmethod
    def get(cls) -> "_Spawner":
        with cls._lock:
            if cls._instance is None or not cls._instance._thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def _serve(self) -> None:
        while True:
            make, future = self._requests.get()
            try:
                future.set_result(make())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((lambda: subprocess.Popen(argv, **kwargs), future))
        return future.result()


def _die_with_parent(parent: int) -> Callable[[], None]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _quiet_when_qemu_is_gone(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """qemu.qmp's reader task ends in EOFError when QEMU exits (the guest
    ended, or close() quit it): expected, and not worth a traceback."""
    if isinstance(context.get("exception"), (EOFError, ConnectionError)):
        return
    loop.default_exception_handler(context)


class _QmpConnection:
    """A qemu.qmp client on its own event-loop thread, called synchronously
    from any thread (each call is a coroutine submitted to that loop)."""

    def __init__(self, sock: socket.socket, timeout: float, events: bool = True) -> None:
        from qemu.qmp import QMPClient

        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_quiet_when_qemu_is_gone)
        self._thread = threading.Thread(target=self._loop.run_forever, name="kvmbench-qmp", daemon=True)
        self._thread.start()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._client = QMPClient("kvmbench")
        self._events_task: asyncio.Task[None] | None = None
        self.run(self._connect(sock, events), timeout)

    async def _connect(self, sock: socket.socket, events: bool) -> None:
        await self._client.connect(sock)
        if events:
            self._events_task = asyncio.get_running_loop().create_task(self._collect_events())

    async def _collect_events(self) -> None:
        from qemu.qmp import EventListener

        listener = EventListener()
        with self._client.listen(listener):
            async for event in listener:
                self.events.append(dict(event))

    def run(self, coroutine: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def execute(self, command: str, arguments: dict[str, Any], timeout: float) -> Any:
        return self.run(self._client.execute(command, arguments or None), timeout)

    async def _shutdown(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            try:
                await self._events_task
            except asyncio.CancelledError:
                pass
        await self._client.disconnect()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self._shutdown(), 2.0)
        except Exception:  # QEMU is gone or going: nothing to disconnect from
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2.0)
        if not self._thread.is_alive():
            self._loop.close()


_MTREE_RAM = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ram\): (\S+)", re.M)


class GuestMemory:
    """The guest's RAM read and written straight in QEMU's address space
    through /proc/PID/mem: a few microseconds a read, while the guest runs,
    no QMP round trip (ptrace access to QEMU, our own child, is needed).

    Guest physical ranges come from QEMU's flat view of the "memory"
    address space (``info mtree -f``), each range's host address from HMP
    ``gpa2hva``; a RAM block is contiguous in QEMU's memory.
    """

    def __init__(self, pid: int, ranges: list[tuple[int, int, int]]) -> None:
        self._fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        #: (guest physical start, end, host virtual address), sorted.
        self.ranges = sorted(ranges)

    @classmethod
    def of(cls, qemu: "Qemu") -> "GuestMemory":
        def hmp(line: str) -> str:
            return str(qemu.qmp("human-monitor-command", **{"command-line": line}))

        section = hmp("info mtree -f").split('AS "memory"', 1)[-1].split("FlatView", 1)[0]
        ranges = []
        for match in _MTREE_RAM.finditer(section):
            start, end = int(match[1], 16), int(match[2], 16) + 1
            answer = hmp(f"gpa2hva {start:#x}")  # "Host virtual address for 0x0 (pc.ram) is 0x7f..."
            hva = re.search(r"is (0x[0-9a-f]+)", answer)
            if hva is None:
                raise QemuError(f"QEMU gave no host address for guest RAM at {start:#x}: {answer.strip()}")
            ranges.append((start, end, int(hva[1], 16)))
        if not ranges:
            raise QemuError("QEMU's memory map shows no RAM")
        try:
            return cls(qemu.pid, ranges)
        except OSError as exc:
            raise QemuError(f"cannot read QEMU's memory (/proc/{qemu.pid}/mem): {exc.strerror}") from None

    def _host(self, address: int, size: int) -> int:
        for start, end, hva in self.ranges:
            if start <= address and address + size <= end:
                return hva + address - start
        raise GuestMemoryError(f"guest physical {address:#x}+{size:#x} is not in RAM")

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at guest physical ``address``."""
        host = self._host(address, size)
        data = os.pread(self._fd, size, host)
        if len(data) != size:
            raise GuestMemoryError(f"read {len(data)} of {size} bytes at guest physical {address:#x}")
        return data

    def write(self, address: int, data: bytes) -> None:
        host = self._host(address, len(data))
        if os.pwrite(self._fd, data, host) != len(data):
            raise GuestMemoryError(f"short write at guest physical {address:#x}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Qemu:
    """A running qemu-system-x86_64; create with :meth:`start`."""

    def __init__(self, options: QemuOptions, directory: tempfile.TemporaryDirectory[str]) -> None:
        self.options = options
        self._tmp = directory
        self.directory = Path(directory.name)
        self.gdb_address = f"unix:{self.directory / 'gdb.sock'}"
        self.qmp_path = self.directory / "qmp.sock"
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: _QmpConnection | None = None
        self._console_socket: socket.socket | None = None
        self._console_parts: collections.deque[str] = collections.deque()
        self._console_size = 0
        self._console_lock = threading.Condition()
        self._on_console: Callable[[str], None] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._memory: GuestMemory | None = None
        self._threads: list[threading.Thread] = []
        self._console_reader: threading.Thread | None = None
        self._socket_timeout = SOCKET_TIMEOUT
        self._collect_events = True
        self._closed = False
        self._close_lock = threading.Lock()

    # -- starting ---------------------------------------------------------

    @classmethod
    def start(
        cls,
        options: QemuOptions,
        on_console: Callable[[str], None] | None = None,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        qmp_events: bool = True,
    ) -> "Qemu":
        """Start QEMU stopped before the first instruction (or before a
        snapshot's next one, with ``options.incoming``), its console already
        being read. Raises :class:`QemuError` with QEMU's own reason when it
        is missing, exits at start, or creates no sockets within
        ``socket_timeout`` seconds. Without ``qmp_events`` QMP is connected
        only when first used and its events are not collected
        (:attr:`qmp_events` stays empty): QEMU sends a STOP and a RESUME
        event to every connected monitor at each gdbstub stop, and parsing
        them cost ~300 us of CPU per breakpoint hit (measured), more than a
        hit's packets."""
        if options.accel == "kvm":
            usable, reason = kvm_accel_usable()
            if not usable:
                raise QemuError(f"accel='kvm' is not usable here: {reason}; use accel='tcg'")
        binary = shutil.which(options.binary)
        if binary is None:
            raise QemuError(f"{options.binary} not found: install Debian's qemu-system-x86 (make setup)")
        directory = tempfile.TemporaryDirectory(prefix="kvmbench-qemu-")
        qemu = cls(directory=directory, options=options)
        qemu._on_console = on_console
        qemu._socket_timeout = socket_timeout
        qemu._collect_events = qmp_events
        try:
            memory_bytes(options.memory)  # a bad size fails here, not in QEMU
            argv = options.command_line(qemu.directory)
            argv[0] = binary
            qemu._launch(argv)
            qemu._wait_for_sockets(options.socket_names())
            qemu._connect_console()
            if qmp_events:
                qemu._connect_qmp()
            if options.incoming is not None:
                qemu._wait_incoming()
        except BaseException:
            qemu.close()
            raise
        return qemu

    def _launch(self, argv: list[str]) -> None:
        self.argv = argv
        self._process = _Spawner.get().popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own session and process group
            preexec_fn=_die_with_parent(os.getpid()),
            cwd=self.directory,
        )
        self._spawn_thread(self._read_stderr, "kvmbench-qemu-stderr")

    def _spawn_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for raw in self._process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)

    def _failure(self, what: str) -> QemuError:
        """An error naming QEMU's last stderr line, once its stderr is drained."""
        process = self._process
        if process is not None and process.poll() is not None:
            for thread in self._threads:
                if thread.name == "kvmbench-qemu-stderr":
                    thread.join(1.0)
        lines = list(self._stderr)
        last = lines[-1] if lines else ""
        if last.startswith(os.path.basename(self.options.binary) + ": "):
            last = last.split(": ", 1)[1]
        # A plugin that refuses to load says why before QEMU's generic line.
        plugin = next((line for line in reversed(lines[:-1]) if line.startswith("kvmbench ")), None)
        if plugin is not None:
            last = f"{last} ({plugin})"
        return QemuError(f"{what}: {last}" if last else what)

    def _wait_for_sockets(self, names: Iterable[str]) -> None:
        paths = [self.directory / f"{name}.sock" for name in names]
        deadline = time.monotonic() + self._socket_timeout
        assert self._process is not None
        while not all(path.exists() for path in paths):
            if self._process.poll() is not None:
                raise self._failure(f"QEMU exited at start (status {self._process.returncode})")
            if time.monotonic() > deadline:
                missing = ", ".join(p.name for p in paths if not p.exists())
                raise QemuError(f"QEMU did not create its sockets within {self._socket_timeout:g} s ({missing})")
            time.sleep(0.005)

    def _connect_qmp(self) -> None:
        try:
            self._qmp = _QmpConnection(self.connect_socket(self.qmp_path), self._socket_timeout,
                                       self._collect_events)
        except QemuError:
            raise
        except Exception as exc:  # qemu.qmp's ConnectError, EOF, reset, timeout
            if self._process is not None:
                try:
                    self._process.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
            if self.exited:
                raise self._failure(f"QEMU exited at start (status {self.exit_status})") from None
            raise QemuError(f"QMP did not answer on {self.qmp_path.name}: {exc or type(exc).__name__}") from None

    def _connect_console(self) -> None:
        self._console_socket = self.connect_socket(self.directory / "console.sock")
        self._console_reader = self._spawn_thread(self._read_console, "kvmbench-qemu-console")

    def connect_socket(self, path: Path) -> socket.socket:
        """A connection to one of QEMU's server sockets. QEMU binds a socket
        (its file appears) a moment before it listens, so a refused
        connection is retried until the start's socket timeout."""
        deadline = time.monotonic() + self._socket_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return sock
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if self.exited:
                    raise self._failure("QEMU exited at start") from None
                if time.monotonic() > deadline:
                    raise QemuError(
                        f"QEMU did not accept connections on {path.name} within {self._socket_timeout:g} s"
                    )
                time.sleep(0.005)

    def _read_console(self) -> None:
        assert self._console_socket is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                data = self._console_socket.recv(65536)
            except OSError:
                data = b""
            text = decoder.decode(data, final=not data)
            if text:
                with self._console_lock:
                    self._console_parts.append(text)
                    self._console_size += len(text)
                    while self._console_size > CONSOLE_LIMIT and len(self._console_parts) > 1:
                        self._console_size -= len(self._console_parts.popleft())
                    self._console_lock.notify_all()
                callback = self._on_console
                if callback is not None:
                    try:
                        callback(text)
                    except Exception:  # a front end's display bug must not stop the reader
                        pass
            if not data:
                with self._console_lock:
                    self._console_lock.notify_all()
                return

    def _wait_incoming(self) -> None:
        """Wait until the snapshot is loaded (the run state leaves inmigrate)."""
        deadline = time.monotonic() + QMP_TIMEOUT
        while True:
            status = self.status()
            if status != "inmigrate":
                break
            if time.monotonic() > deadline:
                raise QemuError(f"loading the snapshot {self.options.incoming} took over {QMP_TIMEOUT:.0f} s")
            time.sleep(0.002)
        info = self.qmp("query-migrate")
        if info.get("status") == "failed":
            raise self._failure(f"QEMU could not load the snapshot {self.options.incoming}")

    # -- state -------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def console(self) -> str:
        """The serial console's output so far (its last CONSOLE_LIMIT characters)."""
        with self._console_lock:
            return "".join(self._console_parts)

    def wait_for_console(self, text: str, timeout: float) -> str:
        """Block until ``text`` appears on the console; return the console.
        Raises :class:`QemuError` on timeout or if QEMU exits first."""
        deadline = time.monotonic() + timeout
        with self._console_lock:
            while True:
                joined = "".join(self._console_parts)
                if text in joined:
                    return joined
                if self.exited:
                    raise self._failure(f"QEMU exited before the console showed {text!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QemuError(f"the console did not show {text!r} within {timeout:g} s")
                self._console_lock.wait(min(left, 0.1))

    def serial_path(self, name: str) -> Path:
        """The Unix socket of the extra serial port ``name`` (QemuOptions.serials)."""
        if name not in self.options.serials:
            raise QemuError(f"no serial port {name!r}; this QEMU has {list(self.options.serials)}")
        return self.directory / f"{name}.sock"

    @property
    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    @property
    def stderr_lines(self) -> list[str]:
        """QEMU's last lines on stderr (warnings, errors)."""
        return list(self._stderr)

    # -- QMP ---------------------------------------------------------------

    def qmp(self, command: str, timeout: float = QMP_TIMEOUT, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` member (a dict for
        most commands, a list for some queries). Safe from any thread.
        Hyphenated argument names go in as ``**{"cpu-index": 0}``."""
        from qemu.qmp import ExecInterruptedError, ExecuteError

        with self._close_lock:
            if self._closed:
                raise QemuError(f"QMP {command}: QEMU is closed")
            if self._qmp is None:
                self._connect_qmp()
        assert self._qmp is not None
        try:
            return self._qmp.execute(command, arguments, timeout)
        except ExecuteError as exc:
            raise QemuError(f"QMP {command}: {exc}") from None
        except FutureTimeout:
            raise QemuError(f"QMP {command} got no answer within {timeout:g} s") from None
        except (ExecInterruptedError, EOFError, ConnectionError, OSError) as exc:
            if self.exited:
                raise self._failure(f"QMP {command}: QEMU has exited") from None
            raise QemuError(f"QMP {command}: {exc}") from None
        except Exception as exc:  # qemu.qmp's state errors (disconnected client)
            raise QemuError(f"QMP {command}: {type(exc).__name__}: {exc}") from None

    @property
    def qmp_events(self) -> list[dict[str, Any]]:
        """QMP events received so far (the newest 1000)."""
        return list(self._qmp.events) if self._qmp is not None else []

    def status(self) -> str:
        """QEMU's run state: "prelaunch", "running", "paused", ..."""
        return str(self.qmp("query-status")["status"])

    def cont(self) -> None:
        """Let the guest run."""
        self.qmp("cont")

    def stop(self) -> None:
        """Pause the guest (all vCPUs)."""
        self.qmp("stop")

    def read_physical(self, address: int, size: int) -> bytes:
        """``size`` bytes of guest physical memory at ``address``; works
        while the guest runs (through :attr:`memory`)."""
        if size <= 0:
            return b""
        return self.memory.read(address, size)

    @property
    def memory(self) -> GuestMemory:
        """The guest's RAM, read in QEMU's own memory (set up on first use)."""
        if self._memory is None:
            if self._closed:
                raise QemuError("QEMU is closed")
            self._memory = GuestMemory.of(self)
        return self._memory

    def pmemsave(self, address: int, size: int) -> bytes:
        """Guest physical memory through QMP ``pmemsave`` into the private
        directory (~4 ms a call): the portable way, for comparison."""
        path = self.directory / f"pmem-{threading.get_ident()}"
        self.qmp("pmemsave", val=address, size=size, filename=str(path))
        try:
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        if len(data) != size:
            raise QemuError(f"pmemsave of {size} bytes at {address:#x} gave {len(data)}")
        return data

    def save_snapshot(self, path: Path, timeout: float = 120.0) -> None:
        """Write the whole machine to ``path`` (QMP migrate); the guest is
        left paused. Start a new QEMU with ``incoming=path`` to go on from it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".part{os.getpid()}")
        if self.status() == "running":
            self.stop()
        # The default bandwidth limit (32 MiB/s) would make a snapshot of
        # a few hundred MiB take seconds; the file can take it all at once.
        self.qmp("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        self.qmp("migrate", uri="exec:cat > " + shlex.quote(str(partial)))
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp("query-migrate")
            state = info.get("status")
            if state == "completed":
                break
            if state in ("failed", "cancelled"):
                partial.unlink(missing_ok=True)
                raise QemuError(f"saving the snapshot failed: {info.get('error-desc', state)}")
            if time.monotonic() > deadline:
                self.qmp("migrate_cancel")
                partial.unlink(missing_ok=True)
                raise QemuError(f"saving the snapshot took over {timeout:g} s")
            time.sleep(0.005)
        os.replace(partial, path)  # never leave a half-written snapshot under its name

    # -- ending ------------------------------------------------------------

    def wait_exit(self, timeout: float | None = None) -> int | None:
        """Wait for QEMU to exit and return the guest's exit code (see
        :func:`decode_exit_status`), or None if it still runs after ``timeout``."""
        assert self._process is not None
        try:
            status = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        # QEMU is gone: its console socket ends; the reader takes the last
        # output first, so whoever reports the exit shows all of it.
        console = self._console_reader
        if console is not None:
            console.join(CONSOLE_DRAIN_TIMEOUT)
        return decode_exit_status(status)

    @property
    def exit_status(self) -> int | None:
        """QEMU's raw exit status, None while it runs."""
        return None if self._process is None else self._process.poll()

    def close(self) -> None:
        """Quit QEMU, kill its process group and remove its sockets. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        process = self._process
        if process is not None and process.poll() is None and self._qmp is not None:
            try:
                self._qmp.execute("quit", {}, 1.0)
            except Exception:  # killed below either way
                pass
            try:
                process.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
        if self._qmp is not None:
            self._qmp.close()
        if self._memory is not None:
            self._memory.close()
        if self._console_socket is not None:
            self._console_socket.close()
        for thread in self._threads:
            thread.join(1.0)
        self._tmp.cleanup()

    def __enter__(self) -> "Qemu":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("exited" if self.exited else "running")
        return f"<Qemu pid={self._process.pid if self._process else None} {state}>"
