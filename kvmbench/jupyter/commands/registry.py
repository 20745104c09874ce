"""The command registry: every spelling of every command, with its
preconditions (a guest is open, it is stopped) declared once."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.errors import UsageError

if TYPE_CHECKING:
    from kvmbench.jupyter.commands.workbench import Workbench


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    handler: Callable[["Workbench", str], object]
    needs_guest: bool
    needs_stopped: bool
    #: Runs the guest: executed off the event loop (see :mod:`kvmbench.jupyter.transform`).
    runs_guest: bool
    help: str


COMMANDS: dict[str, Command] = {}


def command(name: str, *aliases: str, guest: bool = True, stopped: bool = True,
            runs: bool = False) -> Callable[[Callable[["Workbench", str], object]], Callable[["Workbench", str], object]]:
    """Register a command under ``name`` and its ``aliases``, with its preconditions."""

    def register(handler: Callable[["Workbench", str], object]) -> Callable[["Workbench", str], object]:
        doc = (handler.__doc__ or "").strip().splitlines()
        entry = Command(name, aliases, handler, guest, stopped and guest, runs, doc[0] if doc else "")
        for spelling in (name, *aliases):
            COMMANDS[spelling] = entry
        return handler

    return register


def split_command(line: str) -> tuple[str, str]:
    """('x', '/4gx $rsp') from 'x/4gx $rsp'; ('break', 'fib') from '%break fib'."""
    text = line.strip().lstrip("%")
    match = re.match(r"([A-Za-z_][\w-]*)(.*)", text, re.S)
    if match is None:
        raise UsageError(f"not a command: {line.strip()!r}")
    return match.group(1), match.group(2).strip() if not match.group(2).startswith("/") else match.group(2)


def lookup(name: str) -> Command:
    entry = COMMANDS.get(name)
    if entry is None:
        raise UsageError(f"unknown command {name!r} (try 'help')")
    return entry


def run_control_names() -> frozenset[str]:
    return frozenset(n for n, e in COMMANDS.items() if e.runs_guest)
