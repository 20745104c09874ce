"""Commands about the guest itself: boot, kill, probe, panel, help."""

from __future__ import annotations

import shlex

import kvmbench
from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import COMMANDS, Command, command
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


@command("guest", "boot", guest=False)
def _guest(wb: Workbench, args: str) -> object:
    """guest NAME [ARGS...] [--target kvm|qemu|auto]: boot a bundled guest (or an ELF path), stopped at its first instruction."""
    words, target = split_target(shlex.split(args))
    if not words:
        raise UsageError("usage: guest NAME [ARGS...] [--target kvm|qemu|auto]; bundled guests: "
                         + ", ".join(kvmbench.GUEST_NAMES))
    if wb.session is not None:
        wb.close()
    wb.session = kvmbench.open(words[0], args=words[1:], target=target, on_console=wb.on_console)
    wb.guest_command = words + (["--target", target] if target != "kvm" else [])
    wb._last_registers = {}
    if wb._on_session is not None:
        wb._on_session(wb.session)
    return Text(f"{words[0]}: stopped at {wb.session.pc:#x} <{wb.describe_address(wb.session.pc)}>")


@command("attach", guest=False)
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


@command("kill", stopped=False)
def _kill(wb: Workbench, args: str) -> object:
    """kill: close the guest."""
    wb.close()
    return Text("guest closed")



@command("panel", guest=False, stopped=False)
def _panel(wb: Workbench, args: str) -> object:
    """panel: a live debugger panel (run buttons, breakpoint and watch tables, registers, hit plots)."""
    from kvmbench.jupyter.widgets import panel  # ipywidgets only when asked for

    return panel(wb)


@command("probe", guest=False)
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


@command("help", "h", guest=False)
def _help(wb: Workbench, args: str) -> object:
    """help: the commands and their abbreviations."""
    seen: dict[str, Command] = {}
    for entry in COMMANDS.values():
        seen.setdefault(entry.name, entry)
    rows = [[e.name, " ".join(e.aliases), e.help] for e in seen.values()]
    return Table(["Command", "Aliases", "What"], rows)
