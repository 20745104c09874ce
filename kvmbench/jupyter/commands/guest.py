"""Commands about the guest itself: boot it, the panel, the probe, help."""

from __future__ import annotations

import shlex

import kvmbench
from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import COMMANDS, Command, UndefinedCommand, command, find
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Table, Text


def split_target(words: list[str]) -> tuple[list[str], str]:
    """The words without a ``--target T`` (or ``--target=T``), and T ("kvm")."""
    target, rest = "kvm", []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--target":
            if i + 1 == len(words):
                raise UsageError("--target needs a value: " + ", ".join(kvmbench.TARGETS))
            target, i = words[i + 1], i + 2
            continue
        if word.startswith("--target="):
            target = word.split("=", 1)[1]
        else:
            rest.append(word)
        i += 1
    return rest, target


@command("guest", "boot", guest=False, family="running")
def _guest(wb: Workbench, args: str) -> object:
    """guest NAME [ARGS...] [--target kvm|qemu|auto]: boot a bundled guest (or an ELF path), stopped at its first instruction.

    Booting the same image again keeps its breakpoints, as gdb's ``run``."""
    words, target = split_target(shlex.split(args))
    if not words:
        raise UsageError("usage: guest NAME [ARGS...] [--target kvm|qemu|auto]; bundled guests: "
                         + ", ".join(kvmbench.GUEST_NAMES))
    session = wb.boot(words, target=target)
    frame_text = ""
    try:
        frame = session.source_frame(0)
        frame_text = "\n" + "\n".join(wb.frame_text(frame))
    except Exception:  # noqa: BLE001 - the boot line must not fail for want of a frame
        frame_text = ""
    kept = len(wb.breakpoint_specs) + len(wb.watch_specs)
    note = f" ({kept} breakpoint{'s' if kept != 1 else ''} kept)" if kept else ""
    return Text(f"{words[0]}: stopped at {session.pc:#x} <{wb.describe_address(session.pc)}>{note}{frame_text}")


@command("attach", guest=False, family="running")
def _attach(wb: Workbench, args: str) -> object:
    """attach HOST:PORT|unix:PATH [--symbols ELF]: debug the guest behind any GDB stub, stopped where it stands."""
    words = shlex.split(args)
    symbols = None
    if "--symbols" in words:
        at = words.index("--symbols")
        if at + 1 == len(words):
            raise UsageError("--symbols needs the guest's ELF")
        symbols = words[at + 1]
        del words[at:at + 2]
    if len(words) != 1:
        raise UsageError("usage: attach HOST:PORT|unix:PATH [--symbols ELF]")
    if wb.session is not None:
        wb.close()
    wb.session = kvmbench.attach(words[0], symbols=symbols, on_console=wb.on_console)
    wb.guest_command = []
    wb._last_registers = {}
    if wb._on_session is not None:
        wb._on_session(wb.session)
    return Text(f"attached to {words[0]}: stopped at {wb.session.pc:#x} "
                f"<{wb.describe_address(wb.session.pc)}>")


@command("panel", guest=False, stopped=False, family="support")
def _panel(wb: Workbench, args: str) -> object:
    """panel: a live debugger panel (run buttons, source, locals, breakpoint and watch tables, registers, hit plots)."""
    from kvmbench.jupyter.widgets import panel  # ipywidgets only when asked for

    return panel(wb)


@command("probe", guest=False, family="support")
def _probe(wb: Workbench, args: str) -> object:
    """probe: what this host's KVM really delivers (the capability table)."""
    if wb.session is not None:
        caps = wb.session.capabilities
    else:
        from kvmbench.backends.kvm.probe import probe_host
        caps = probe_host()
    rows = []
    for feature, result in caps.results.items():
        cost = f"{result.median_us:.1f} us" if result.median_us is not None else ""
        rows.append([feature.value, "yes" if result.works else "no", cost, result.detail])
    return Table(["Feature", "Works", "Cost", "Detail"], rows, title=f"host: {caps.host}")


#: gdb's command classes, for ``help``.
FAMILIES = {
    "breakpoints": "Making program stop at certain points.",
    "data": "Examining data.",
    "files": "Specifying and examining files.",
    "running": "Running the program.",
    "stack": "Examining the stack.",
    "status": "Status inquiries.",
    "support": "Support facilities.",
    "gdbserver": "Serving the session to gdb and lldb.",
    "linux": "A Linux kernel under QEMU: its shell, tasks, log and modules.",
}


def _entries() -> list[Command]:
    seen: dict[str, Command] = {}
    for entry in COMMANDS.values():
        seen.setdefault(entry.name, entry)
    return sorted(seen.values(), key=lambda e: e.name)


def help_text(topic: str = "") -> str:
    """gdb's ``help`` (the classes), ``help CLASS`` (its commands) and ``help COMMAND``."""
    topic = topic.strip()
    if not topic:
        lines = ["List of classes of commands:", ""]
        lines += [f"{name} -- {what}" for name, what in FAMILIES.items()]
        lines += ["", 'Type "help" followed by a class name for a list of commands in that class.',
                  'Type "help" followed by command name for full documentation.',
                  "Command name abbreviations are allowed if unambiguous.",
                  "A cell's line that starts with a command word runs as that command; other lines are",
                  "Python (python STATEMENT, or print(...), runs Python whatever the first word)."]
        return "\n".join(lines)
    if topic in FAMILIES:
        lines = [FAMILIES[topic], "", "List of commands:", ""]
        lines += [f"{e.name} -- {e.help}" for e in _entries() if e.family == topic]
        return "\n".join(lines)
    entry = find(topic.split()[0])
    if entry is None:
        raise UndefinedCommand(f'Undefined command: "{topic}".  Try "help".')
    names = ", ".join((entry.name, *entry.aliases))
    return f"{names}\n{entry.doc}"


@command("help", "h", guest=False, family="support")
def _help(wb: Workbench, args: str) -> object:
    """help [CLASS | COMMAND]: the classes of commands, the commands of a class, or a command's documentation."""
    return Text(help_text(args))
