"""Commands about the guest itself: boot, kill, probe, panel, help."""

from __future__ import annotations

import shlex

import kvmbench
from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import COMMANDS, Command, command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Table, Text


@command("guest", "boot", guest=False)
def _guest(wb: Workbench, args: str) -> object:
    """guest NAME [ARGS...]: boot a bundled guest (or an ELF path), stopped at its first instruction."""
    words = shlex.split(args)
    if not words:
        raise UsageError("usage: guest NAME [ARGS...]; bundled guests: " + ", ".join(kvmbench.GUEST_NAMES))
    if wb.session is not None:
        wb.close()
    wb.session = kvmbench.open(words[0], args=words[1:], on_console=wb.on_console)
    wb.guest_command = words
    wb._last_registers = {}
    if wb._on_session is not None:
        wb._on_session(wb.session)
    return Text(f"{words[0]}: stopped at {wb.session.pc:#x} <{wb.describe_address(wb.session.pc)}>")


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
