"""Linux kernel commands: boot a kernel, run commands in its shell, and
look at its data structures through drgn.

``%linux --boot [--kernel K] [--initrd I] [--file HOST:GUEST]... [--module NAME]...
[--append ARGS] [--smp N] [--memory SIZE] [--accel auto|tcg|kvm]`` boots a
kernel (Debian's by default) and makes it the notebook's session, stopped
at its ready shell; re-running it replaces the session, as ``%guest``
does. ``%linux CMD`` runs CMD in the guest's shell (booting Debian's kernel
first when no kernel is open): the guest runs while it does, tracepoints
count, and a breakpoint ends the cell with its stop card; ``%linux`` alone
then goes on with the command to its end (``continue`` goes on too).
``%ps``, ``%dmesg [N]`` and ``%lsmod`` read the kernel's task list, log and
module list with drgn, without running the guest.
"""

from __future__ import annotations

import dataclasses
import html
import shlex
import time
from dataclasses import dataclass

from kvmbench.engine.model import Stop, StopReason
from kvmbench.errors import SessionStateError, UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import StopView, Table, Text
from kvmbench.linux_session import LinuxSession, ShellResult, linux

#: %linux --boot's options and the keyword of kvmbench.linux() each sets.
_BOOT_OPTIONS = {"--kernel": "kernel", "--initrd": "initrd", "--append": "append",
                 "--accel": "accel", "--smp": "smp", "--memory": "memory"}
_USAGE = ("usage: %linux CMD (run CMD in the guest's shell) | %linux (go on with an interrupted "
          "command) | %linux --boot [--kernel K] [--initrd I] [--file HOST:GUEST]... "
          "[--module NAME]... [--append ARGS] [--smp N] [--memory SIZE] [--accel auto|tcg|kvm]")


@dataclass(frozen=True, repr=False)
class ShellView(StopView):
    """A guest command's output, with the stop card when a breakpoint
    stopped the guest before the command ended."""

    output: str = ""
    #: Show the stop card (the command was interrupted); else only the headline.
    card: bool = False

    def text(self) -> str:
        parts = [self.output.rstrip("\n")] if self.output else []
        parts.append(super().text() if self.card else self.headline)
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        out = (f"<pre class='kvmbench-shell' style='margin:0'>{html.escape(self.output)}</pre>"
               if self.output else "")
        if self.card:
            return out + super()._repr_html_()
        return out + f"<div style='font-family:monospace;font-size:12px;color:#555'>{html.escape(self.headline)}</div>"


def _linux_session(wb: Workbench) -> LinuxSession:
    session = wb.session
    if session is None:
        raise SessionStateError("no Linux kernel: boot one with %linux --boot (or run %linux CMD)")
    if not isinstance(session, LinuxSession):
        raise SessionStateError("the open session is not a Linux kernel: %linux --boot replaces it")
    return session


def _boot(wb: Workbench, words: list[str]) -> LinuxSession:
    options: dict[str, object] = {}
    files: dict[str, str] = {}
    modules: list[str] = []
    i = 0
    while i < len(words):
        word, value = words[i], None
        if "=" in word and word.startswith("--"):
            word, value = word.split("=", 1)
        elif i + 1 < len(words):
            value = words[i + 1]
            i += 1
        i += 1
        if word not in (*_BOOT_OPTIONS, "--file", "--module"):
            raise UsageError(f"unknown option {word!r}; {_USAGE}")
        if value is None:
            raise UsageError(f"{word} needs a value")
        if word == "--file":
            host, sep, guest = value.rpartition(":")
            if not sep or not host or not guest.startswith("/"):
                raise UsageError(f"--file {value!r}: use HOST:GUEST, GUEST an absolute path in the guest")
            files[guest] = host
        elif word == "--module":
            modules.append(value)
        elif word == "--smp":
            try:
                options["smp"] = int(value)
            except ValueError:
                raise UsageError(f"--smp is a number of CPUs, not {value!r}") from None
        else:
            options[_BOOT_OPTIONS[word]] = value
    if wb.session is not None:
        wb.close()
    session = linux(files=files, modules=modules, on_console=wb.on_console, **options)  # type: ignore[arg-type]
    wb.session = session
    wb.guest_command = []
    wb._last_registers = {}
    if wb._on_session is not None:
        wb._on_session(session)
    return session


def _ready_view(session: LinuxSession, seconds: float) -> ShellView:
    origin = "from its snapshot" if session.machine.from_snapshot else "cold"
    dwarf = "with DWARF" if session.vmlinux is not None else "no DWARF (make linux-debug for drgn's types)"
    headline = (f"Linux {session.release} ready {origin} in {seconds:.2f} s: {session.target.name}, "
                f"{session.smp} CPU{'s' if session.smp > 1 else ''}, {dwarf}")
    return ShellView(Stop(StopReason.PAUSED, session.pc, detail="at the ready shell"), [headline])


def _result_view(wb: Workbench, result: ShellResult) -> ShellView:
    session = _linux_session(wb)
    if result.finished or result.stop is None:
        stop = session.last_stop or Stop(StopReason.PAUSED, session.pc)
        return ShellView(stop, [result.describe()], output=result.output)
    view = wb.stop_view(result.stop)
    cpu = result.stop.extra.get("cpu")
    headline = view.headline + (f" on CPU {cpu}" if cpu is not None else "")
    headline += f"; {result.command!r} waits (%linux goes on with it)"
    lines = list(view.lines)
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        lines = [headline]
    else:
        lines[first] = headline
    return ShellView(**{**{f.name: getattr(view, f.name) for f in dataclasses.fields(StopView)},
                        "lines": lines}, output=result.output, card=True)


@command("linux", guest=False, runs=True)
def _linux(wb: Workbench, args: str) -> object:
    """linux CMD | linux | linux --boot [--kernel K] [--file HOST:GUEST]...: run CMD in the kernel's shell (Debian's kernel booted if none is open); alone: go on with an interrupted command; --boot: boot a kernel."""
    text = args.strip()
    if text.startswith("--boot"):
        started = time.monotonic()
        return _ready_view(_boot(wb, shlex.split(text)[1:]), time.monotonic() - started)
    if text.startswith("--") and text.split()[0] != "--":
        raise UsageError(_USAGE)
    text = text.removeprefix("--").strip()
    booted = None
    if wb.session is None:
        if not text:
            raise UsageError(_USAGE)
        started = time.monotonic()
        booted = _ready_view(_boot(wb, []), time.monotonic() - started)
    session = _linux_session(wb)
    if not text:
        if session.command is None:
            raise SessionStateError("no guest command is running; " + _USAGE)
        return _result_view(wb, session.wait_command())
    view = _result_view(wb, session.shell(text))
    if booted is not None:
        view = dataclasses.replace(view, lines=[booted.headline, *view.lines])
    return view


@command("ps", guest=False)
def _ps(wb: Workbench, args: str) -> object:
    """ps: the kernel's tasks (drgn over the task list; the guest's ps without DWARF)."""
    session = _linux_session(wb)
    if session.vmlinux is None:
        return _without_dwarf(session, "ps")
    rows = [[t.pid, t.state, t.cpu, f"[{t.comm}]" if t.kernel_thread else t.comm]
            for t in session.tasks()]
    return Table(["PID", "S", "CPU", "COMMAND"], rows, footer=f"{len(rows)} tasks (drgn, from guest memory)")


@command("dmesg", guest=False)
def _dmesg(wb: Workbench, args: str) -> object:
    """dmesg [N]: the kernel log (its last N lines), read from guest memory with drgn."""
    session = _linux_session(wb)
    count = None
    if args.strip():
        try:
            count = int(args.strip())
        except ValueError:
            raise UsageError(f"dmesg [N]: N is a number of lines, not {args.strip()!r}") from None
    log = session.dmesg() if session.vmlinux is not None else _guest_output(session, "dmesg")
    lines = log.rstrip("\n").splitlines()
    return Text("\n".join(lines[-count:] if count else lines))


@command("lsmod", guest=False)
def _lsmod(wb: Workbench, args: str) -> object:
    """lsmod: the loaded kernel modules (drgn; /proc/modules without DWARF)."""
    session = _linux_session(wb)
    if session.vmlinux is None:
        return _without_dwarf(session, "cat /proc/modules")
    rows = [[m.name, m.size, m.references, f"{m.address:#x}"] for m in session.modules()]
    return Table(["Module", "Size", "Used by", "Address"], rows)


def _guest_output(session: LinuxSession, command_line: str) -> str:
    result = session.shell(command_line)
    if not result.finished:
        raise SessionStateError(f"{command_line!r} was interrupted: {result.describe()}")
    return result.output


def _without_dwarf(session: LinuxSession, command_line: str) -> Text:
    output = _guest_output(session, command_line)
    return Text(f"{output.rstrip()}\n(no DWARF for this kernel: the guest's own {command_line.split()[0]} "
                "ran; make linux-debug lets drgn read it from memory without running the guest)")
