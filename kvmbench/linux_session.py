"""Linux kernel sessions: boot a kernel, run commands in it, debug it.

>>> import kvmbench
>>> s = kvmbench.linux(files={"/bin/syscalls": "syscalls"})   # Debian's kernel, at the ready shell
>>> bp = s.breakpoints.trace("__x64_sys_personality")          # served by the plugin counter on TCG
>>> s.shell("/bin/syscalls 1000").output
'made 1000 personality calls\\n'
>>> bp.hit_count
1000

A :class:`LinuxSession` is an engine :class:`~kvmbench.engine.session.Session`
over :class:`~kvmbench.backends.linux.target.LinuxTarget` (QEMU's gdbstub,
plus the TCG counting plugin) with what a kernel needs on top: the guest's
shell, kernel and module symbols (KASLR applied: they come from the
kernel's own kallsyms tables in guest memory), breakpoints on symbols of
modules not loaded yet, drgn over the live kernel, and kernel backtraces.
The engine knows nothing of any of it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvmbench.backends.linux.channel import ChannelError, CommandTimeout, RunningCommand
from kvmbench.backends.linux.image import cached_debug_vmlinux
from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions
from kvmbench.backends.linux.target import LinuxTarget
from kvmbench.engine.counting import Internal
from kvmbench.engine.model import Breakpoint, RunState, Stop, StopReason
from kvmbench.engine.requests import Breakpoints
from kvmbench.engine.session import Session
from kvmbench.errors import KvmbenchError, SessionStateError, SymbolError, UsageError
from kvmbench.linux_frames import KernelUnwinder
from kvmbench.symbols.kallsyms import parse_kallsyms
from kvmbench.symbols.model import Symbol, SymbolKind
from kvmbench.symbols.table import SymbolTable

if TYPE_CHECKING:
    import drgn

__all__ = ["linux", "LinuxSession", "ShellResult", "PendingBreakpoint", "KernelTask", "KernelModule"]

#: x86-64 kernel space starts here (Documentation/arch/x86/x86_64/mm.rst):
#: a frame below it is the user program the kernel was entered from.
KERNEL_SPACE = 0xFFFF800000000000
#: The kernel function every module load passes through after the module's
#: symbols are in place and before its init function runs (kernel/module/main.c).
MODULE_LOADED = "do_init_module"
#: ... and the one a module's unloading ends in, the module still intact.
MODULE_FREED = "free_module"
#: How often the command watcher looks at the channel.
_POLL = 0.05
#: A location that may wait for a module: a name, optionally +offset.
_PENDABLE = re.compile(r"[A-Za-z_][\w.$]*(\s*\+\s*(0[xX][0-9a-fA-F]+|\d+))?")
#: struct pt_regs members (arch/x86/include/asm/ptrace.h) and the register
#: each holds; orig_ax has no register of its own.
_PT_REGS = (("r15", "r15"), ("r14", "r14"), ("r13", "r13"), ("r12", "r12"), ("bp", "rbp"),
            ("bx", "rbx"), ("r11", "r11"), ("r10", "r10"), ("r9", "r9"), ("r8", "r8"),
            ("ax", "rax"), ("cx", "rcx"), ("dx", "rdx"), ("si", "rsi"), ("di", "rdi"),
            ("ip", "rip"), ("cs", "cs"), ("flags", "eflags"), ("sp", "rsp"), ("ss", "ss"))


# --- what the session returns ---------------------------------------------------------


@dataclass(frozen=True)
class ShellResult:
    """What :meth:`LinuxSession.shell` saw of a guest command.

    ``output`` is its stdout and stderr in order (so far, if it still
    runs); ``wait_status`` as waitpid(2) gives it, None while it runs.
    ``stop`` is what ended the call before the command ended: a breakpoint
    or watchpoint (the guest is stopped there, the command waits), a pause,
    or the kernel's end.
    """

    command: str
    output: str
    wait_status: int | None = None
    stop: Stop | None = None

    @property
    def finished(self) -> bool:
        return self.wait_status is not None

    @property
    def exit_code(self) -> int | None:
        """The exit code, None while it runs or when a signal ended it."""
        status = self.wait_status
        if status is None or status & 0x7F:
            return None
        return (status >> 8) & 0xFF

    @property
    def signal(self) -> int | None:
        return None if self.wait_status is None else (self.wait_status & 0x7F) or None

    @property
    def ok(self) -> bool:
        return self.wait_status == 0

    def describe(self) -> str:
        """One line: how the command ended, or why it is still running."""
        if self.stop is not None and not self.finished:
            if not self.stop.alive:
                return f"{self.command!r} did not finish: {self.stop.describe()}"
            return f"{self.command!r} still runs: {self.stop.describe()}"
        if self.signal is not None:
            return f"{self.command!r} was killed by signal {self.signal}"
        return f"{self.command!r} exited with code {self.exit_code}"

    def __str__(self) -> str:
        return self.output


@dataclass(eq=False)
class PendingBreakpoint(Breakpoint):
    """A breakpoint on a symbol no loaded code has yet (a module's, before
    the module loads). It has no address and no mechanism (``served_by``
    says "pending"); ``reason`` says when it will resolve. Once it does,
    ``session.breakpoints[number]`` is the real breakpoint, with the same
    number, and :attr:`resolved` points at it."""

    options: dict[str, Any] = field(default_factory=dict)
    resolved: Breakpoint | None = None


@dataclass(frozen=True)
class KernelTask:
    """One task as ps(1) shows it, read from the kernel's task list."""

    pid: int
    comm: str
    state: str  # R, S, D, I, Z... (fs/proc/array.c task_state_array)
    cpu: int
    kernel_thread: bool


@dataclass(frozen=True)
class KernelModule:
    """A loaded module as lsmod(8) shows it."""

    name: str
    size: int
    references: int
    address: int


# --- booting --------------------------------------------------------------------------


def linux(
    kernel: str | os.PathLike[str] | None = None,
    initrd: str | os.PathLike[str] | None = None,
    append: str = "",
    accel: str = "auto",
    smp: int = 1,
    memory: str = "512M",
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    *,
    modules: tuple[str, ...] | list[str] = (),
    vmlinux: str | os.PathLike[str] | bool | None = None,
    kaslr: bool = False,
    snapshot: bool = True,
    on_console: Callable[[str], None] | None = None,
) -> "LinuxSession":
    """Boot a Linux kernel under QEMU and return a session stopped at its
    ready shell.

    ``kernel``: a bzImage or a vmlinux with a PVH note (None: Debian's
    current kernel, fetched into the cache on first use). ``initrd``: the
    user's own archive, unpacked before kvmbench's init. ``files`` maps
    guest paths to host files put in the initramfs (``{"/bin/prog":
    "build/prog"}``); ``modules`` names modules of Debian's kernel package
    put in /lib/modules. ``accel="auto"`` is KVM on a VMX/SVM host and TCG
    elsewhere (TCG also counts tracepoints through kvmbench's plugin).
    ``vmlinux``: the kernel's ELF with DWARF for drgn's types and kernel
    backtraces (None: the kernel's own if it has DWARF, or Debian's -dbg
    vmlinux if ``make linux-debug`` fetched it; False: none). ``kaslr``
    boots the bzImage rather than its vmlinux, so that the kernel picks a
    random base (symbols and drgn follow it). The first boot of a kernel
    and initramfs saves a snapshot; later sessions start from it.
    """
    options = _options(kernel, initrd, append, accel, smp, memory, files, modules, kaslr)
    counting = options.resolved_accel() == "tcg"
    machine = LinuxMachine.boot(options, on_console=on_console, snapshot=snapshot, counting=counting)
    try:
        if vmlinux is False:
            debug = None
        elif vmlinux is None or vmlinux is True:
            debug = cached_debug_vmlinux(machine.kernel)
        else:
            debug = Path(vmlinux).expanduser()
            if not debug.is_file():
                raise UsageError(f"vmlinux {debug}: no such file")
        target = LinuxTarget.attach(machine)
    except BaseException:
        machine.close()
        raise
    try:
        return LinuxSession(target, debug)
    except BaseException:
        target.close()
        raise


def _options(kernel: object, initrd: object, append: object, accel: object, smp: object,
             memory: object, files: object, modules: object, kaslr: object) -> LinuxOptions:
    """The boot options, every argument checked with a one-line error."""
    for value, what in ((kernel, "kernel"), (initrd, "initrd")):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{what} is a path, not {value!r}")
    if not isinstance(append, str):
        raise UsageError(f"append is the kernel command line as a string, not {append!r}")
    if accel not in ("auto", "tcg", "kvm"):
        raise UsageError(f"accel must be 'auto', 'tcg' or 'kvm', not {accel!r}")
    if isinstance(smp, bool) or not isinstance(smp, int) or not 1 <= smp <= 64:
        raise UsageError(f"smp is a number of CPUs from 1 to 64, not {smp!r}")
    if not isinstance(memory, str):
        raise UsageError(f"memory is a size such as '512M', not {memory!r}")
    if files is None:
        files = {}
    if not isinstance(files, Mapping):
        raise UsageError(f"files maps guest paths to host files ({{'/bin/prog': 'prog'}}), not {files!r}")
    for guest, host in files.items():
        if not isinstance(guest, str) or not isinstance(host, (str, os.PathLike)):
            raise UsageError(f"files: {guest!r}: {host!r} is not a guest path and a host path")
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):  # type: ignore[attr-defined]
        raise UsageError(f"modules is a list of module names, not {modules!r}")
    if not isinstance(kaslr, bool):
        raise UsageError(f"kaslr is True or False, not {kaslr!r}")
    from kvmbench.backends.qemu import memory_bytes

    memory_bytes(memory)  # a bad size fails here, in one line
    return LinuxOptions.make(kernel=kernel, initrd=initrd, append=append, accel=accel, smp=smp,
                             memory=memory, files=files, modules=modules, kaslr=kaslr)  # type: ignore[arg-type]


# --- breakpoints that wait for a module ----------------------------------------------


class LinuxBreakpoints(Breakpoints):
    """``session.breakpoints`` of a kernel session: a breakpoint on a name
    the kernel does not have yet stays pending until a module defines it
    (gdb's pending breakpoints, for modules instead of shared libraries)."""

    def __init__(self, session: "LinuxSession") -> None:
        super().__init__(session)
        self._linux = session
        self._pending: dict[int, PendingBreakpoint] = {}

    def add(self, location: str | int, **options: Any) -> Breakpoint:  # type: ignore[override]
        """As :meth:`Breakpoints.add`; a symbol that is not loaded yet gives
        a :class:`PendingBreakpoint` instead of an error."""
        try:
            return super().add(location, **options)
        except SymbolError:
            if not isinstance(location, str) or not _PENDABLE.fullmatch(location.strip()):
                raise
            return self._linux._add_pending(location.strip(), options)

    @property
    def pending(self) -> list[PendingBreakpoint]:
        """Breakpoints waiting for their symbol, by number."""
        return [self._pending[n] for n in sorted(self._pending)]

    def _resolve_pending(self, bp: PendingBreakpoint) -> Breakpoint:
        """Serve ``bp`` now that its symbol is known, under its own number
        (gdb keeps a pending breakpoint's number); later requests go on
        from the highest number taken."""
        numbers = self._linux._numbers
        highest = numbers.next_number
        numbers.next_number = bp.number
        try:
            real = super().add(bp.location, **bp.options)
        finally:
            numbers.next_number = highest
        del self._pending[bp.number]
        bp.resolved = real
        return real

    def __getitem__(self, number: int) -> Breakpoint:
        if number in self._pending:
            return self._pending[number]
        return super().__getitem__(number)

    def get(self, number: int) -> Breakpoint | None:
        return self._pending.get(number) or super().get(number)

    def delete(self, number: int) -> None:
        if self._pending.pop(number, None) is None:
            super().delete(number)

    def enable(self, number: int) -> None:
        if number in self._pending:
            self._pending[number].enabled = self._pending[number].options["enabled"] = True
        else:
            super().enable(number)

    def disable(self, number: int) -> None:
        if number in self._pending:
            self._pending[number].enabled = self._pending[number].options["enabled"] = False
        else:
            super().disable(number)

    def set_condition(self, number: int, condition: Any) -> None:
        if number in self._pending:
            self._pending[number].condition = self._pending[number].options["condition"] = condition
        else:
            super().set_condition(number, condition)

    def set_ignore_count(self, number: int, count: int) -> None:
        if number in self._pending:
            self._pending[number].ignore_count = self._pending[number].options["ignore_count"] = count
        else:
            super().set_ignore_count(number, count)

    def __iter__(self) -> Iterator[Breakpoint]:
        return iter(sorted([*super().__iter__(), *self._pending.values()], key=lambda b: b.number))

    def __len__(self) -> int:
        return super().__len__() + len(self._pending)

    def __contains__(self, number: object) -> bool:
        return number in self._pending or super().__contains__(number)


# --- the guest command the session is running ---------------------------------------


class _CommandWatch:
    """Reads a running guest command's output on its own thread, and ends
    the session's run when the command ends (or kills it at its deadline)."""

    def __init__(self, session: "LinuxSession", running: RunningCommand, timeout: float) -> None:
        self.session = session
        self.running = running
        self.command = running.command
        self.timeout = timeout
        self._lock = threading.Lock()
        self._deadline: float | None = time.monotonic() + timeout
        self.ended = threading.Event()
        self.timed_out = False
        self.reported = False
        self.error: KvmbenchError | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._watch, name="kvmbench-linux-command", daemon=True)
        self._thread.start()

    def set_deadline(self, timeout: float | None) -> None:
        with self._lock:
            self.timeout = timeout if timeout is not None else self.timeout
            self._deadline = None if timeout is None else time.monotonic() + timeout

    def _past_deadline(self) -> bool:
        with self._lock:
            return self._deadline is not None and time.monotonic() > self._deadline

    def _watch(self) -> None:
        try:
            while not self._closing:
                if self.running.poll(_POLL) is not None:
                    break
                if self._past_deadline():
                    # The init kills the command's process group and reports
                    # its end; the guest is running (the deadline only counts
                    # while shell() runs it), so that comes soon.
                    self.timed_out = True
                    self.running.kill()
                    break
        except (ChannelError, OSError) as e:
            self.error = e if isinstance(e, ChannelError) else ChannelError(
                f"the guest's command channel failed: {e}")
        finally:
            self.ended.set()
            try:
                self.session.pause()
            except KvmbenchError:
                pass  # QEMU is gone (the kernel stopped): the run ends on its own

    def close(self) -> None:
        self._closing = True

    def result(self, stop: Stop | None = None) -> ShellResult:
        done = self.running.result
        return ShellResult(self.command, self.running.output,
                           done.wait_status if done is not None else None, stop)


# --- the session ----------------------------------------------------------------------


class LinuxSession(Session):
    """A Linux kernel under the debugger; create with :func:`kvmbench.linux`."""

    target: LinuxTarget

    def __init__(self, target: LinuxTarget, vmlinux: Path | None = None) -> None:
        self.machine = target.machine
        self.machine.driven_by = "the kernel's debug session"
        #: The kernel's ELF with DWARF (drgn's types, kernel backtraces), if any.
        self.vmlinux = vmlinux
        self._kernel_symbols: SymbolTable | None = None
        #: Symbols of loaded modules, by module name.
        self._module_symbols: dict[str, tuple[Symbol, ...]] = {}
        self._drgn: drgn.Program | None = None
        self._command: _CommandWatch | None = None
        #: The last guest command that ended (its whole output and status).
        self.last_command: ShellResult | None = None
        super().__init__(target, self._load_symbols)
        self.frames.unwinder_factory = lambda base: KernelUnwinder(self, base)
        self.breakpoints: LinuxBreakpoints = LinuxBreakpoints(self)
        self._hooks: list[Breakpoint] = []
        self._hooks_armed = False
        self._refreshing = False
        self._modules_seen = ""  # /proc/modules when module symbols were last read
        # Parsing ~95,000 kallsyms lines into a table takes about a second:
        # start it now, so that it is ready when the first breakpoint needs it.
        self._symbols_ready = threading.Thread(target=self._kernel_table, name="kvmbench-kallsyms",
                                               daemon=True)
        self._symbols_error: BaseException | None = None
        self._symbols_ready.start()

    # --- what is running ----------------------------------------------------------------

    @property
    def release(self) -> str:
        """The kernel release (``uname -r``)."""
        return self.machine.release

    @property
    def cpu(self) -> int | None:
        """The CPU the last stop happened on (0-based)."""
        return self.target.cpu

    @property
    def kaslr_offset(self) -> int:
        """The kernel's KASLR slide, VMCOREINFO's KERNELOFFSET (0 when it
        was not moved: a vmlinux booted through PVH, or nokaslr)."""
        return self.machine.vmcoreinfo().kernel_offset

    @property
    def smp(self) -> int:
        return self.machine.options.smp

    @property
    def command(self) -> str | None:
        """The guest command that is still running (stopped at a breakpoint), if any."""
        return self._command.command if self._command is not None else None

    # --- the guest's shell ----------------------------------------------------------------

    def shell(self, command: str, timeout: float = 60.0) -> ShellResult:
        """Run ``command`` with the guest's ``/bin/sh -c`` and return what it printed.

        The guest runs while the command does: tracepoints count, and a
        breakpoint or watchpoint that stops the guest ends the call with
        that stop (``result.stop``; the command waits, and
        :meth:`wait_command` or a ``cont()`` goes on with it). The guest is
        stopped again afterwards. After ``timeout`` seconds of running the
        command is killed and :class:`~kvmbench.backends.linux.channel.CommandTimeout`
        raised; the session goes on.
        """
        if not isinstance(command, str) or not command.strip():
            raise UsageError(f"a guest command is a non-empty string, not {command!r}")
        _check_timeout(timeout)
        self._require_stopped()
        if self._command is not None:
            raise SessionStateError(
                f"the guest still runs {self._command.command!r}: wait_command() runs it to its end")
        watch = _CommandWatch(self, self.machine.start_shell(command), timeout)
        self._command = watch
        return self._follow(watch)

    def wait_command(self, timeout: float = 60.0) -> ShellResult:
        """Run the guest until the command a breakpoint interrupted ends
        (another breakpoint may stop it first, as in :meth:`shell`)."""
        _check_timeout(timeout)
        watch = self._command
        if watch is None:
            raise SessionStateError("no guest command is running")
        self._require_stopped()
        watch.set_deadline(timeout)
        return self._follow(watch)

    def _follow(self, watch: _CommandWatch) -> ShellResult:
        """Run the guest until the command ends or something stops it first."""
        stop = self.cont()
        if not stop.alive:
            return watch.result(stop)  # the kernel ended (its channel with it)
        if watch.ended.is_set() and self._command is None:
            if watch.error is not None:
                raise watch.error
            if watch.timed_out:
                raise CommandTimeout(watch.command, watch.timeout, watch.running.output)
            result = self.last_command
            assert result is not None
            if self.breakpoints.pending and not self._hooks and not self._refreshing:
                # No DWARF, so no word from the kernel when a module loads:
                # the command may have loaded one; look (and say nothing if not).
                self._refreshing = True
                try:
                    self.refresh_modules()
                except KvmbenchError:
                    pass
                finally:
                    self._refreshing = False
                self.last_command = result
            return result
        # A breakpoint, a watchpoint, the user's pause or the kernel's end:
        # the command waits, and its timeout no longer runs.
        watch.set_deadline(None)
        return watch.result(stop)

    def read_text(self, path: str, timeout: float = 60.0) -> str:
        """A guest file's text, read with ``cat`` (the guest runs meanwhile)."""
        result = self.shell(f"cat {_quote(path)}", timeout)
        if not result.finished or not result.ok:
            raise KvmbenchError(f"cannot read {path} in the guest: {result.output.strip() or result.describe()}")
        return result.output

    # --- run control ---------------------------------------------------------------------

    def _run(self, body: Callable[[], Stop]) -> Stop:
        """Every run: ends at once when the running guest command already
        ended (its end was seen after the last stop), and names the stop's CPU."""
        watch = self._command

        def guarded() -> Stop:
            if watch is not None and watch.ended.is_set():
                return Stop(StopReason.PAUSED, self.target.pc)
            return body()

        stop = super()._run(guarded)
        if watch is not None and watch.ended.is_set() and self._command is watch:
            self._command = None
            result = self.last_command = watch.result()
            if watch.timed_out:
                how = f"was killed at its {watch.timeout:g} s timeout"
            elif watch.error is not None:
                how = f"lost: {watch.error}"
            elif result.signal is not None:
                how = f"was killed by signal {result.signal}"
            else:
                how = f"exited with code {result.exit_code}"
            if stop.reason is StopReason.PAUSED:
                stop = dataclasses.replace(stop, detail=f"guest command {watch.command!r} {how}")
        if not stop.alive and self._qemu_gone():
            # The kernel ended QEMU (a panic with panic=-1 and -no-reboot, a
            # power-off): its console says why; the stub's closed socket does not.
            lines = self.machine.qemu.console.strip().splitlines()
            why = next((line for line in reversed(lines) if "Kernel panic" in line),
                       lines[-1] if lines else "no console output")
            stop = dataclasses.replace(stop, reason=StopReason.EXITED, pc=None,
                                       detail=f"QEMU exited with the kernel: {why.strip()}")
            self.state = RunState.EXITED
        cpu = self.target.cpu
        if cpu is not None and stop.alive:
            stop.extra["cpu"] = cpu
        self.last_stop = stop
        return stop

    def read_c_string(self, address: int, limit: int = 4096) -> bytes:
        """The NUL-terminated string at virtual ``address`` (a user pointer
        such as a system call's filename, in the stopped CPU's address
        space), read page by page so that one ending just below an unmapped
        page is read whole; at most ``limit`` bytes."""
        out = bytearray()
        while len(out) < limit:
            here = address + len(out)
            chunk = self.mem.read(here, min(4096 - (here & 0xFFF), limit - len(out)))
            end = chunk.find(b"\0")
            if end >= 0:
                return bytes(out + chunk[:end])
            out += chunk
        return bytes(out)

    def _qemu_gone(self) -> bool:
        """Whether QEMU has exited (given a moment: it closes its sockets first)."""
        try:
            self.machine.qemu.wait_exit(2.0)
        except KvmbenchError:
            pass  # it exited with a status of its own; exited says so
        return self.machine.qemu.exited

    # --- symbols ----------------------------------------------------------------------------

    def _kernel_table(self) -> None:
        try:
            self._kernel_symbols = self.machine.symbols()
        except BaseException as e:  # handed to whoever needs the symbols
            self._symbols_error = e

    def _load_symbols(self) -> SymbolTable:
        self._symbols_ready.join()
        if self._kernel_symbols is None:
            if self._symbols_error is not None:
                raise self._symbols_error
            self._kernel_symbols = self.machine.symbols()
        self._arm_module_hooks()
        if not self._module_symbols:
            return self._kernel_symbols
        symbols = [*self._kernel_symbols.iter_symbols()]
        for name in sorted(self._module_symbols):
            symbols.extend(self._module_symbols[name])
        return SymbolTable(symbols, name=f"kallsyms of {self.release} and {len(self._module_symbols)} modules")

    def _symbols_changed(self) -> None:
        self._symbols = self._load_symbols()

    @property
    def module_symbols(self) -> Mapping[str, tuple[Symbol, ...]]:
        """Symbols of the modules loaded so far, by module."""
        return dict(self._module_symbols)

    def _add_pending(self, location: str, options: dict[str, Any]) -> PendingBreakpoint:
        """A breakpoint waiting for a module that defines ``location``."""
        options = dict(options)
        self._arm_module_hooks()
        number = self._numbers.take()
        bp = PendingBreakpoint(number=number, location=location, address=0,
                               tracepoint=bool(options.get("tracepoint", False)),
                               temporary=bool(options.get("temporary", False)),
                               enabled=bool(options.get("enabled", True)),
                               condition=options.get("condition"),
                               ignore_count=int(options.get("ignore_count", 0)),
                               reason=self._pending_reason(f"no loaded code defines {location} yet"),
                               options=options)
        self.breakpoints._pending[number] = bp
        return bp

    def _pending_reason(self, error: str) -> str:
        if not self._hooks:
            return (f"pending: {error}; resolved after the shell command that loads its module "
                    "(without the kernel's DWARF a module's symbols cannot be read while it "
                    "loads: make linux-debug, or vmlinux=)")
        return (f"pending: {error}; resolved when a module that defines it loads "
                f"(at {MODULE_LOADED}, before the module's init runs)")

    def _resolve_pending(self) -> list[Breakpoint]:
        """Serve every pending breakpoint whose symbol is known now."""
        resolved = []
        for bp in self.breakpoints.pending:
            try:
                self.symbols.resolve(bp.location)
            except SymbolError:
                continue
            resolved.append(self.breakpoints._resolve_pending(bp))
        return resolved

    def trace_functions(self, *patterns: str, **options: Any) -> list[Breakpoint]:
        """A tracepoint on every kernel function whose name matches one of
        the shell-style ``patterns`` (``"vfs_*"``, ``"__x64_sys_*"``), in
        name order; on TCG the plugin counter serves them (no stop per
        hit). ``options`` are :meth:`Breakpoints.add`'s."""
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise UsageError(f"trace_functions takes name patterns such as 'vfs_*', not {patterns!r}")
        table = self.symbols
        wanted = re.compile("|".join(fnmatch.translate(p) for p in patterns))
        names = sorted({symbol.name for symbol in table.functions() if wanted.match(symbol.name)})
        if not names:
            raise SymbolError(f"no kernel function matches {', '.join(patterns)}")
        traced: dict[int, Breakpoint] = {}
        for name in names:
            address = table.resolve(name)
            if address not in traced:  # aliases of one function count once
                traced[address] = self.breakpoints.trace(name, **options)
        return list(traced.values())

    # --- modules ------------------------------------------------------------------------

    def _arm_module_hooks(self) -> None:
        """With the kernel's DWARF, learn of module loads as they happen:
        an internal breakpoint at do_init_module reads the new module's
        symbols (drgn: struct module's kallsyms) and serves the pending
        breakpoints they define, before the module's init function runs;
        one at free_module forgets them again."""
        if self._hooks_armed or self.vmlinux is None or self._kernel_symbols is None:
            return
        self._hooks_armed = True
        for number, (name, hook) in enumerate(((MODULE_LOADED, self._module_loading),
                                               (MODULE_FREED, self._module_freeing)), start=1):
            symbol = self._kernel_symbols.get_by_name(name)
            if symbol is None:
                continue
            bp = Breakpoint(number=-(1 << 40) - number, location=name, address=symbol.address,
                            internal=True)

            def in_frame(hook: Callable[[], None] = hook) -> bool:
                try:
                    hook()
                except Exception:  # noqa: BLE001 - a hook must never end the guest's run
                    pass
                return False  # never a stop

            try:
                self._change(lambda bp=bp: self.serving.serve_breakpoint(bp))
            except KvmbenchError:
                continue
            self.counting.internal[bp.number] = Internal(bp, StopReason.LOCATION, in_frame)
            self._hooks.append(bp)
        # No module is loaded in a fresh session (kvmbench's init loads
        # none): every one that loads from now on passes the hook.

    def _drgn_modules(self) -> list[tuple[str, tuple[Symbol, ...]]]:
        from drgn.helpers.linux.module import for_each_module

        return [(_module_name(mod), _module_kallsyms(mod)) for mod in for_each_module(self.drgn)]

    def _module_loading(self) -> None:
        import drgn

        mod = drgn.Object(self.drgn, "struct module *", value=self.target.read_register("rdi"))
        self._module_symbols[_module_name(mod)] = _module_kallsyms(mod)
        self._symbols_changed()
        self._resolve_pending()

    def _module_freeing(self) -> None:
        import drgn

        mod = drgn.Object(self.drgn, "struct module *", value=self.target.read_register("rdi"))
        name = _module_name(mod)
        gone = self._module_symbols.pop(name, ())
        if not gone:
            return
        low, high = min(s.address for s in gone), max(s.address + max(s.size, 1) for s in gone)
        for bp in list(self.breakpoints):
            if isinstance(bp, PendingBreakpoint) or bp.internal or not low <= bp.address < high:
                continue
            options = dict(kind=bp.kind, condition=bp.condition, ignore_count=bp.ignore_count,
                           temporary=bp.temporary, tracepoint=bp.tracepoint, enabled=bp.enabled,
                           mechanism=bp.requested)
            number = bp.number
            Breakpoints.delete(self.breakpoints, number)
            pending = PendingBreakpoint(number=number, location=bp.location, address=0,
                                        tracepoint=bp.tracepoint, temporary=bp.temporary,
                                        enabled=bp.enabled, condition=bp.condition,
                                        reason=self._pending_reason(f"module {name} was unloaded"),
                                        options=options)
            self.breakpoints._pending[number] = pending
        self._symbols_changed()

    def refresh_modules(self) -> list[Breakpoint]:
        """Read the loaded modules' symbols again (drgn with DWARF, else the
        guest's /proc/kallsyms through its shell) and serve the pending
        breakpoints they define; returns those breakpoints."""
        if self.vmlinux is not None:
            self._module_symbols = dict(self._drgn_modules())
        else:
            loaded = self.shell("cat /proc/modules")
            if loaded.output == self._modules_seen:
                return []  # no module came or went: nothing new to resolve
            self._modules_seen = loaded.output
            # Only the modules' lines cross the (emulated UART) channel.
            text = self.shell("grep -F '[' /proc/kallsyms", timeout=120)
            if not text.finished:
                raise SessionStateError(f"reading the module symbols was interrupted: {text.describe()}")
            lines: dict[str, list[str]] = {}
            for line in text.output.splitlines():
                match = re.search(r"\[(\S+)\]\s*$", line)
                if match is not None:
                    lines.setdefault(match.group(1), []).append(line)
            self._module_symbols = {
                name: tuple(parse_kallsyms("\n".join(module), name=f"[{name}]").iter_symbols())
                for name, module in lines.items()}
        self._symbols_changed()
        return self._resolve_pending()

    # --- drgn ---------------------------------------------------------------------------

    @property
    def drgn(self) -> "drgn.Program":
        """A drgn Program over the live kernel: memory read straight from
        QEMU, VMCOREINFO from guest memory (KASLR included), and the
        kernel's DWARF when there is a :attr:`vmlinux` (types, task lists,
        dmesg, stack traces); without it, symbols only."""
        if self._drgn is None:
            self._drgn = self.machine.program(vmlinux=self.vmlinux)
        return self._drgn

    def _need_dwarf(self, what: str) -> None:
        if self.vmlinux is None:
            raise KvmbenchError(f"{what} needs the kernel's DWARF: make linux-debug "
                                f"(Debian's -dbg vmlinux), or pass vmlinux= to kvmbench.linux()")

    def tasks(self) -> list[KernelTask]:
        """Every task in the kernel's task list (drgn; needs DWARF)."""
        self._need_dwarf("the task list")
        from drgn.helpers.linux.pid import for_each_task
        from drgn.helpers.linux.sched import task_state_to_char

        tasks = []
        for task in for_each_task(self.drgn):
            try:
                cpu = int(task.thread_info.cpu)  # CONFIG_THREAD_INFO_IN_TASK, Linux 5.16+
            except AttributeError:
                cpu = int(task.cpu)
            tasks.append(KernelTask(int(task.pid), task.comm.string_().decode(errors="replace"),
                                    task_state_to_char(task), cpu, not task.mm))
        return sorted(tasks, key=lambda t: t.pid)

    def dmesg(self) -> str:
        """The kernel log, as dmesg prints it (drgn; needs DWARF)."""
        self._need_dwarf("the kernel log")
        from drgn.helpers.linux.printk import get_dmesg

        return get_dmesg(self.drgn).decode(errors="replace")

    def modules(self) -> list[KernelModule]:
        """The loaded modules (drgn; needs DWARF)."""
        self._need_dwarf("the module list")
        from drgn.helpers.linux.module import for_each_module, module_address_regions

        found = []
        for mod in for_each_module(self.drgn):
            regions = [r for r in module_address_regions(mod) if r[1]]
            base = min((start for start, _ in regions), default=0)
            found.append(KernelModule(_module_name(mod), sum(size for _, size in regions),
                                      int(mod.refcnt.counter) - 1, base))
        return found

    # --- kernel backtraces -------------------------------------------------------------

    def stack_trace(self, registers: Mapping[str, int] | None = None) -> "drgn.StackTrace":
        """drgn's stack trace of the stopped CPU (or from ``registers``),
        unwound through the kernel's ORC data or DWARF CFI; needs DWARF."""
        self._require_inspectable()
        self._need_dwarf("a kernel backtrace")
        import drgn

        program = self.drgn
        pt_regs = program.type("struct pt_regs")
        raw = bytearray(pt_regs.size)
        values = dict(self.target.read_registers()) if registers is None else dict(registers)
        for member, register in _PT_REGS:
            try:
                offset = drgn.offsetof(pt_regs, member)
            except LookupError:
                continue
            value = values.get(register)
            if value is None:
                try:
                    value = self.target.read_register(register)
                except KvmbenchError:
                    value = 0
            raw[offset:offset + 8] = (value & (1 << 64) - 1).to_bytes(8, "little")
        return program.stack_trace(drgn.Object.from_bytes_(program, pt_regs, bytes(raw)))

    def backtrace(self, limit: int = 64) -> list[int]:
        """The pcs of the stopped CPU's kernel call chain, innermost first,
        unwound by drgn (ORC) when the kernel's DWARF is there; otherwise
        the engine's frame-pointer rules, which stop at the first frame they
        cannot verify.

        Code drgn has no unwind data for (a module's, whose own DWARF is not
        loaded) is passed where the caller is certain: at a function's
        first instruction the return address is at rsp."""
        if self.vmlinux is None:
            return super().backtrace(limit)
        self._require_inspectable()
        registers = dict(self.target.read_registers())
        pcs: list[int] = []
        while len(pcs) < limit:
            frames = [frame.pc for frame in self.stack_trace(registers) if not frame.is_inline]
            # (An inlined frame's physical frame follows it, at the same pc.)
            # Where drgn lacks unwind data it may go on from garbage: keep
            # the frames whose pc lies in a known kernel function.
            kernel = list(itertools.takewhile(self.in_kernel_code, frames))
            pcs.extend(kernel[:limit - len(pcs)])
            if len(kernel) != 1:
                break  # unwound (or a lone frame entered from user space)
            pc, rsp = kernel[0], registers["rsp"]
            symbol = self.symbols.get_containing(pc)
            if symbol is None or symbol.address != pc:
                break
            try:
                caller = int.from_bytes(self._mem.read(rsp, 8), "little")
            except KvmbenchError:
                break
            if caller < KERNEL_SPACE or self.symbols.get_containing(caller) is None:
                break
            registers = {**registers, "rip": caller, "rsp": rsp + 8}
        return pcs

    def in_kernel_code(self, pc: int) -> bool:
        """Whether ``pc`` lies in a known function of the kernel (or a module)."""
        symbol = self.symbols.get_containing(pc) if pc >= KERNEL_SPACE else None
        return symbol is not None and symbol.kind is SymbolKind.FUNCTION

    # --- ending -------------------------------------------------------------------------

    def close(self) -> None:
        """Quit the kernel's QEMU. Idempotent."""
        if self._command is not None:
            self._command.close()
        super().close()

    def __repr__(self) -> str:
        origin = "snapshot" if self.machine.from_snapshot else "cold boot"
        return f"<LinuxSession {self.release} ({origin}, {self.target.name}, smp={self.smp}) {self.state.value}>"


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UsageError(f"a timeout is a positive number of seconds, not {timeout!r}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _module_name(mod: "drgn.Object") -> str:
    return mod.name.string_().decode(errors="replace")


def _module_kallsyms(mod: "drgn.Object") -> tuple[Symbol, ...]:
    """A module's symbols from its own kallsyms tables (drgn, with DWARF)."""
    import drgn
    from drgn.helpers.linux.kallsyms import module_kallsyms

    ranked = []
    for symbol in module_kallsyms(mod):
        if symbol.kind == drgn.SymbolKind.FUNC:
            kind = SymbolKind.FUNCTION
        elif symbol.kind == drgn.SymbolKind.OBJECT:
            kind = SymbolKind.OBJECT
        else:
            continue
        # Global symbols first: SymbolTable prefers the first of several namesakes.
        local = symbol.binding != drgn.SymbolBinding.GLOBAL
        ranked.append((local, Symbol(symbol.name, symbol.address, symbol.size, kind)))
    ranked.sort(key=lambda item: item[0])
    return tuple(symbol for _, symbol in ranked)
