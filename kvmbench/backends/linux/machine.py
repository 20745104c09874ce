"""A Linux guest under QEMU, booted once and restarted from snapshots.

:meth:`LinuxMachine.boot` starts the kernel (Debian's by default) with
kvmbench's initramfs, waits for the init's ready message on the command
channel (ttyS1) and leaves the guest stopped there. The first boot for a
given kernel, initramfs and machine saves a snapshot (QMP migrate to a
file) in the cache; later boots with the same inputs start from it
(``-incoming``), in a fraction of the cold boot's time, with the same KASLR
layout, so the kernel symbols read once are cached beside it.

The serial console (ttyS0) stays the user's; commands and files travel on
the channel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvmbench.backends.linux.cache import atomic_write, cache_dir, content_hash
from kvmbench.backends.linux.channel import ChannelError, CommandResult, GuestChannel, RunningCommand
from kvmbench.backends.linux.image import KernelImage, extract_modules, kernel_image
from kvmbench.backends.linux.initramfs import InitramfsSpec, build_initramfs, combined_initrd
from kvmbench.backends.linux.kernel_program import kallsyms_text, kernel_program
from kvmbench.backends.linux.plugin import ExecCounter
from kvmbench.backends.linux.vmcoreinfo import Vmcoreinfo, find_vmcoreinfo
from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, PluginSpec, Qemu, QemuOptions, kvm_accel_usable
from kvmbench.errors import KvmbenchError, QemuError, SessionStateError, SymbolError
from kvmbench.symbols.kallsyms import parse_kallsyms
from kvmbench.symbols.table import SymbolTable

if TYPE_CHECKING:
    import drgn

#: The command channel's serial port: ttyS1, the second of QemuOptions.serials.
CHANNEL = "channel"
#: Kernel command line kvmbench always passes. ``quiet`` keeps boot messages
#: off the emulated UART (each byte is an exit), ``panic=-1`` with QEMU's
#: -no-reboot turns a panic into QEMU exiting instead of a hang.
BASE_APPEND = "console=ttyS0 quiet panic=-1"
#: Time a cold boot may take before kvmbench gives up (TCG on a busy host).
BOOT_TIMEOUT = 120.0
#: Bump when anything the snapshot holds changes meaning (the init protocol).
SNAPSHOT_FORMAT = 1
#: Snapshots kept in the cache (~70 MB each), the least recently used go first.
SNAPSHOTS_KEPT = 12


class LinuxBootError(KvmbenchError):
    """The kernel did not reach kvmbench's init."""


@dataclass(frozen=True)
class LinuxOptions:
    """What to boot. ``files`` maps guest paths to host files put in the
    initramfs; ``modules`` names kernel modules from Debian's kernel package
    put in /lib/modules; ``initrd`` is the user's own archive, unpacked
    before kvmbench's (whose /init wins)."""

    kernel: str | os.PathLike[str] | None = None
    initrd: str | os.PathLike[str] | None = None
    append: str = ""
    accel: str = "auto"
    smp: int = 1
    memory: str = "512M"
    files: tuple[tuple[str, str], ...] = ()
    modules: tuple[str, ...] = ()
    #: Boot the bzImage rather than its extracted vmlinux. The vmlinux boots
    #: ~3x faster (PVH) but skips the bzImage's decompressor, which is what
    #: picks the kernel's random placement (arch/x86/boot/compressed/kaslr.c):
    #: only a bzImage boot has a nonzero KASLR slide.
    kaslr: bool = False

    @classmethod
    def make(
        cls,
        *,
        files: Mapping[str, str | os.PathLike[str]] | None = None,
        modules: Sequence[str] = (),
        **options: object,
    ) -> "LinuxOptions":
        """Options from friendlier arguments (a dict of files)."""
        pairs = tuple(sorted((guest, os.fspath(host)) for guest, host in (files or {}).items()))
        return cls(files=pairs, modules=tuple(modules), **options)  # type: ignore[arg-type]

    def resolved_accel(self) -> str:
        if self.accel == "auto":
            return "kvm" if kvm_accel_usable()[0] else "tcg"
        if self.accel == "kvm":
            usable, reason = kvm_accel_usable()
            if not usable:
                raise QemuError(f"accel='kvm' is not usable here: {reason}")
        elif self.accel != "tcg":
            raise QemuError(f"accel must be 'auto', 'tcg' or 'kvm', not {self.accel!r}")
        return self.accel


@dataclass(frozen=True)
class KernelModule:
    """A loaded module as /proc/modules lists it (proc(5))."""

    name: str
    size: int
    references: int
    state: str  # Live, Loading, Unloading
    address: int

    def contains(self, address: int) -> bool:
        """Whether ``address`` lies in the module's core image (text and data)."""
        return self.address <= address < self.address + self.size


@dataclass
class BootTimes:
    """Where a boot's time went, in seconds."""

    prepare: float = 0.0  # kernel image and initramfs (cached after the first time)
    qemu_start: float = 0.0  # QEMU up with its sockets (and the snapshot loaded)
    to_ready: float = 0.0  # from cont to the init's ready message (or its answer)
    snapshot_save: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class _Plan:
    kernel: KernelImage
    initrd: Path
    qemu: QemuOptions
    key: str


def _qemu_identity(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise QemuError(f"{binary} not found: install Debian's qemu-system-x86 (make debian)")
    stat = os.stat(path)
    return f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def plan_boot(options: LinuxOptions, plugins: Sequence[PluginSpec] = ()) -> _Plan:
    kernel = kernel_image(options.kernel)
    if options.kaslr:
        if kernel.bzimage is None:
            raise LinuxBootError(f"kaslr=True needs a bzImage; {kernel.path} is a vmlinux")
        kernel = replace(kernel, path=kernel.bzimage)
    modules = extract_modules(kernel, list(options.modules)) if options.modules else {}
    ours = build_initramfs(InitramfsSpec(dict(options.files), modules))
    initrd = combined_initrd(ours, [Path(options.initrd)] if options.initrd else [])
    append = f"{BASE_APPEND} {options.append}".strip()
    qemu_options = QemuOptions(
        kernel=kernel.path,
        initrd=initrd,
        append=append,
        accel=options.resolved_accel(),
        memory=options.memory,
        smp=options.smp,
        devices=(DEBUG_EXIT_DEVICE,),
        serials=(CHANNEL,),
        plugins=tuple(plugins),
        extra_args=("-no-reboot",),
    )
    # The snapshot depends on everything in the machine but the plugins
    # (they only watch): the kernel file, the initramfs (content-named),
    # the command line, the device set and QEMU itself.
    key = content_hash(
        str(SNAPSHOT_FORMAT),
        _file_identity(kernel.path),
        initrd.name,
        append,
        qemu_options.accel,
        qemu_options.memory,
        str(qemu_options.smp),
        qemu_options.machine,
        repr(qemu_options.devices),
        repr(qemu_options.serials),
        repr(qemu_options.extra_args),
        _qemu_identity(qemu_options.binary),
    )
    return _Plan(kernel, initrd, qemu_options, key)


class LinuxMachine:
    """A booted Linux guest: QEMU, the command channel, and what is known
    about the kernel. Create with :meth:`boot`; always :meth:`close`."""

    def __init__(
        self,
        plan: _Plan,
        qemu: Qemu,
        channel: GuestChannel,
        release: str,
        snapshot_dir: Path,
        counter: ExecCounter | None = None,
        workdir: tempfile.TemporaryDirectory[str] | None = None,
    ) -> None:
        self.kernel = plan.kernel
        self.options = plan.qemu
        self.qemu = qemu
        self.release = release
        self.snapshot_key = plan.key
        self._snapshot_dir = snapshot_dir
        self._channel = channel
        self._lock = threading.Lock()
        self.times = BootTimes()
        self.from_snapshot = False
        self._symbols: SymbolTable | None = None
        self._vmcoreinfo: Vmcoreinfo | None = None
        self._program: Any = None
        self._running: RunningCommand | None = None
        #: Whether this kernel's layout is the cached snapshot's (restored
        #: from it, or saved as it): only then are symbols cached there. A
        #: cold boot of a bzImage has its own KASLR slide.
        self._layout_is_snapshots = False
        #: The TCG counting plugin's table, when booted with ``counting=True``.
        self.counter = counter
        self._workdir = workdir
        #: Who runs the guest when it is not this object (a debug session
        #: attached to QEMU's gdbstub): then QMP must not start or stop it.
        self.driven_by: str | None = None

    # -- booting -------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        options: LinuxOptions = LinuxOptions(),
        *,
        on_console: Callable[[str], None] | None = None,
        snapshot: bool = True,
        counting: bool = False,
        counter_capacity: int = 65536,
        plugins: Sequence[PluginSpec] = (),
    ) -> "LinuxMachine":
        """Boot to kvmbench's init and leave the guest stopped there.

        With ``snapshot`` (the default) a cached snapshot of this kernel,
        initramfs and machine is used when there is one, and made when there
        is not. ``counting`` loads kvmbench's TCG counting plugin
        (:attr:`counter`); ``plugins`` are other TCG plugins. Plugins only
        watch, so they are not part of the snapshot's identity."""
        started = time.monotonic()
        workdir = None
        counter = None
        plugins = tuple(plugins)
        if counting:
            if options.resolved_accel() != "tcg":
                raise QemuError("the counting plugin needs TCG (QEMU loads no TCG plugins under KVM)")
            workdir = tempfile.TemporaryDirectory(prefix="kvmbench-linux-")
            counter = ExecCounter.create(Path(workdir.name), counter_capacity, atomic=options.smp > 1)
            plugins = (counter.plugin_spec(), *plugins)
        try:
            machine = cls._boot(options, plugins, on_console, snapshot, started)
        except BaseException:
            if counter is not None:
                counter.close()
            if workdir is not None:
                workdir.cleanup()
            raise
        machine.counter = counter
        machine._workdir = workdir
        return machine

    @classmethod
    def _boot(
        cls,
        options: LinuxOptions,
        plugins: tuple[PluginSpec, ...],
        on_console: Callable[[str], None] | None,
        snapshot: bool,
        started: float,
    ) -> "LinuxMachine":
        plan = plan_boot(options, plugins)
        prepared = time.monotonic()
        directory = cache_dir("snapshots", plan.key)
        image = directory / "machine.snapshot"
        if snapshot and image.exists() and (directory / "machine.json").exists():
            os.utime(image)  # recently used: pruning keeps it
            try:
                machine = cls._restore(plan, image, directory, on_console)
            except (QemuError, ChannelError):
                # A snapshot QEMU no longer takes (or a damaged file): boot
                # cold and replace it.
                image.unlink(missing_ok=True)
            else:
                machine.times.prepare = prepared - started
                machine.times.total = time.monotonic() - started
                return machine
        machine = cls._cold(plan, directory, on_console)
        machine.times.prepare = prepared - started
        if snapshot:
            saved = time.monotonic()
            try:
                machine._save_snapshot(image)
            except (QemuError, OSError) as exc:
                warnings.warn(f"kvmbench could not save the Linux snapshot (next boot is cold again): {exc}",
                              stacklevel=2)
            else:
                machine._layout_is_snapshots = True
                machine.times.snapshot_save = time.monotonic() - saved
                _prune_snapshots(directory.parent, keep=SNAPSHOTS_KEPT)
        machine.times.total = time.monotonic() - started
        return machine

    @staticmethod
    def _start(options: QemuOptions, on_console: Callable[[str], None] | None) -> tuple[Qemu, GuestChannel]:
        qemu = Qemu.start(options, on_console)
        try:
            channel = GuestChannel(qemu.connect_socket(qemu.serial_path(CHANNEL)))
        except BaseException:
            qemu.close()
            raise
        return qemu, channel

    @classmethod
    def _cold(cls, plan: _Plan, directory: Path, on_console: Callable[[str], None] | None) -> "LinuxMachine":
        begin = time.monotonic()
        qemu, channel = cls._start(plan.qemu, on_console)
        try:
            up = time.monotonic()
            qemu.cont()
            release = _wait_ready(qemu, channel)
            qemu.stop()
        except BaseException:
            channel.close()
            qemu.close()
            raise
        machine = cls(plan, qemu, channel, release, directory)
        machine.times.qemu_start = up - begin
        machine.times.to_ready = time.monotonic() - up
        return machine

    @classmethod
    def _restore(
        cls, plan: _Plan, image: Path, directory: Path, on_console: Callable[[str], None] | None
    ) -> "LinuxMachine":
        begin = time.monotonic()
        try:
            meta = json.loads((directory / "machine.json").read_text())
            release = str(meta["release"])
        except (OSError, ValueError, KeyError):
            raise ChannelError(f"the snapshot's description in {directory} is unreadable") from None
        options = replace(plan.qemu, incoming=image)
        qemu, channel = cls._start(options, on_console)
        try:
            up = time.monotonic()
            qemu.cont()
            channel.sync(10.0)
            qemu.stop()
        except BaseException:
            channel.close()
            qemu.close()
            raise
        machine = cls(plan, qemu, channel, release, directory)
        machine.from_snapshot = True
        machine._layout_is_snapshots = True
        machine.times.qemu_start = up - begin
        machine.times.to_ready = time.monotonic() - up
        return machine

    def _save_snapshot(self, image: Path) -> None:
        self.qemu.save_snapshot(image)
        meta = {"release": self.release, "kernel": str(self.kernel.path), "format": SNAPSHOT_FORMAT}
        atomic_write(self._snapshot_dir / "machine.json", json.dumps(meta).encode())

    # -- the guest's shell ------------------------------------------------------

    def shell(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` with the guest's ``/bin/sh -c``; the guest runs
        while it does and is stopped again afterwards. Raises
        :class:`~kvmbench.backends.linux.channel.CommandTimeout` (the command
        is killed) after ``timeout`` seconds."""
        with self._lock:
            return self._with_guest_running(lambda: self._channel.run(command, timeout))

    def start_shell(self, command: str) -> RunningCommand:
        """Start ``command`` and return at once, leaving the run state to the
        caller (who runs the guest, e.g. until a breakpoint, then polls or
        waits on the result). Nothing else may use the channel until the
        command has ended."""
        with self._lock:
            if self._running is not None and self._running.result is None:
                raise SessionStateError(f"the guest still runs {self._running.command!r}")
            self._running = self._channel.start(command)
            return self._running

    def read_file(self, path: str, timeout: float = 60.0) -> bytes:
        """A guest file's contents, through the init (the guest runs meanwhile)."""
        with self._lock:
            return self._with_guest_running(lambda: self._channel.read_file(path, timeout))

    def _with_guest_running(self, request: Callable[[], Any]) -> Any:
        if self.driven_by is not None:
            # A QMP stop under an attached gdbstub client sends that client
            # a stop reply it never asked for (QEMU 7.2 gdb_vm_state_change).
            raise SessionStateError(f"{self.driven_by} runs this guest: use its shell()")
        if self._running is not None and self._running.result is None:
            raise SessionStateError(f"the guest still runs {self._running.command!r}")
        was_running = self.qemu.status() == "running"
        if not was_running:
            self.qemu.cont()
        try:
            return request()
        finally:
            if not was_running and not self.qemu.exited:
                self.qemu.stop()

    # -- the kernel ------------------------------------------------------------

    @property
    def gdb_address(self) -> str:
        return self.qemu.gdb_address

    def vmcoreinfo(self) -> Vmcoreinfo:
        """The kernel's VMCOREINFO, found in guest memory (the address is
        remembered with the snapshot, the note re-read each time)."""
        if self._vmcoreinfo is None:
            hint_file = self._snapshot_dir / "vmcoreinfo.address"
            hint = None
            if self._layout_is_snapshots and hint_file.exists():
                hint = int(hint_file.read_text(), 16)
            memory = self.qemu.memory
            found = find_vmcoreinfo(memory.read, [(s, e) for s, e, _ in memory.ranges], hint=hint)
            if self._layout_is_snapshots:
                atomic_write(hint_file, f"{found.physical_address:#x}\n".encode())
            self._vmcoreinfo = found
        return self._vmcoreinfo

    def program(self, vmlinux: str | os.PathLike[str] | None = None) -> "drgn.Program":
        """A drgn Program over the live kernel (memory read in QEMU's own
        memory, VMCOREINFO from guest memory). With ``vmlinux`` (DWARF) it
        has types; without, symbols from the kernel's kallsyms tables."""
        if vmlinux is None and self._program is not None:
            return self._program
        memory = self.qemu.memory
        program = kernel_program(
            memory.read, [(s, e) for s, e, _ in memory.ranges], self.vmcoreinfo(), vmlinux=vmlinux
        )
        if vmlinux is None:
            self._program = program
        return program

    def proc_kallsyms(self, timeout: float = 300.0) -> str:
        """The guest's own /proc/kallsyms, read through the init: slow (the
        channel is an emulated UART, ~150 KB/s here) but it includes the
        modules loaded now."""
        return self.read_file("/proc/kallsyms", timeout=timeout).decode("ascii", errors="replace")

    def kallsyms(self) -> str:
        """The kernel's symbols in /proc/kallsyms format, read from its own
        kallsyms tables in guest memory through drgn (about a second) and
        cached with the snapshot, whose layout (KASLR included) they
        describe. Core kernel only: see :meth:`proc_kallsyms` for modules."""
        cached = self._snapshot_dir / "kallsyms"
        if self._layout_is_snapshots and cached.exists():
            return cached.read_text(encoding="ascii", errors="replace")
        text = kallsyms_text(self.program())
        if self._layout_is_snapshots:
            atomic_write(cached, text.encode("ascii", errors="replace"))
        return text

    def loaded_modules(self) -> list[KernelModule]:
        """The modules loaded now, from the guest's /proc/modules."""
        text = self.read_file("/proc/modules").decode(errors="replace")
        modules = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 6:
                modules.append(KernelModule(fields[0], int(fields[1]), int(fields[2]), fields[4], int(fields[5], 16)))
        return modules

    def module_symbols(self) -> SymbolTable:
        """The symbols of the modules loaded now (their /proc/kallsyms lines,
        picked out in the guest so only those cross the channel)."""
        output = self.shell("grep -F '[' /proc/kallsyms", timeout=120).output
        return parse_kallsyms(output, name=f"module kallsyms of {self.release}")

    def symbols(self) -> SymbolTable:
        """The running kernel's symbols (runtime addresses: KASLR applied)."""
        if self._symbols is None:
            self._symbols = parse_kallsyms(self.kallsyms(), name=f"kallsyms of {self.release}")
        return self._symbols

    def link_address(self) -> int:
        """Where the kernel image is linked (``_text`` before KASLR): the
        lowest virtual address of its loadable segments."""
        from elftools.elf.elffile import ELFFile

        elf = self.kernel.vmlinux or (self.kernel.path if self.kernel.is_elf else None)
        if elf is None:
            return 0xFFFFFFFF81000000  # __START_KERNEL_map + CONFIG_PHYSICAL_START, x86-64 default
        with open(elf, "rb") as stream:
            return min(
                segment.header.p_vaddr
                for segment in ELFFile(stream).iter_segments()
                if segment.header.p_type == "PT_LOAD" and segment.header.p_vaddr >= 1 << 63
            )

    def kaslr_slide_from_kallsyms(self) -> int:
        """``_text`` as the running kernel has it, minus its link address."""
        text = self.symbols().get_by_name("_text")
        if text is None:
            raise SymbolError("the guest's kallsyms has no _text")
        return text.address - self.link_address()

    # -- ending ----------------------------------------------------------------

    def close(self) -> None:
        """Quit QEMU. Idempotent."""
        self._channel.close()
        self.qemu.close()
        if self.counter is not None:
            self.counter.close()
            self.counter = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "LinuxMachine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        origin = "snapshot" if self.from_snapshot else "cold boot"
        return f"<LinuxMachine {self.release} ({origin}) {self.qemu!r}>"


def _prune_snapshots(base: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used snapshot directories."""
    entries = []
    for directory in base.iterdir():
        image = directory / "machine.snapshot"
        if image.exists():
            entries.append((image.stat().st_mtime, directory))
    for _, directory in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(qemu: Qemu, channel: GuestChannel) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            return channel.wait_ready(min(1.0, max(0.01, deadline - time.monotonic())))
        except ChannelError:
            if qemu.exited:
                console = qemu.console.strip().splitlines()
                last = console[-1] if console else "no console output"
                raise LinuxBootError(f"the kernel stopped before kvmbench's init was ready: {last}") from None
            if time.monotonic() > deadline:
                console = qemu.console.strip().splitlines()
                last = console[-1] if console else "no console output"
                raise LinuxBootError(
                    f"kvmbench's init was not ready within {BOOT_TIMEOUT:.0f} s (last console line: {last})"
                ) from None
