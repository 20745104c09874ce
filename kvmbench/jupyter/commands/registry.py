"""The command registry: every spelling of every command, with its
preconditions (a guest is open, it is stopped) declared once.

Command words are looked up as gdb looks them up (GDB manual, "Command
Syntax"): an exact name or alias first, then any unambiguous prefix of a
command's name (``disas``, ``cond``, ``wat``); an ambiguous prefix and an
unknown word get gdb's own answers (``Ambiguous command "d...": ...``,
``Undefined command: "foo".  Try "help".``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.errors import UsageError

if TYPE_CHECKING:
    from kvmbench.jupyter.commands.workbench import Workbench


class UndefinedCommand(UsageError):
    """A word that is no command (gdb's ``Undefined command: "foo".  Try "help".``)."""


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
    #: The command family, for ``help`` (gdb's command classes).
    family: str = ""

    @property
    def doc(self) -> str:
        """The whole help text (the handler's docstring)."""
        return (self.handler.__doc__ or self.help).strip()


COMMANDS: dict[str, Command] = {}


def command(name: str, *aliases: str, guest: bool = True, stopped: bool = True,
            runs: bool = False, family: str = "") -> Callable[[Callable[["Workbench", str], object]], Callable[["Workbench", str], object]]:
    """Register a command under ``name`` and its ``aliases``, with its preconditions."""

    def register(handler: Callable[["Workbench", str], object]) -> Callable[["Workbench", str], object]:
        doc = (handler.__doc__ or "").strip().splitlines()
        group = family or handler.__module__.rsplit(".", 1)[-1]
        entry = Command(name, aliases, handler, guest, stopped and guest, runs, doc[0] if doc else "", group)
        for spelling in (name, *aliases):
            COMMANDS[spelling] = entry
        return handler

    return register


_WORD = re.compile(r"([A-Za-z_][\w-]*)(.*)", re.S)


def split_command(line: str) -> tuple[str, str]:
    """('x', '/4gx $rsp') from 'x/4gx $rsp'; ('break', 'fib') from '%break fib'."""
    text = line.strip().lstrip("%")
    match = _WORD.match(text)
    if match is None:
        word = text.split()[0] if text.split() else text
        raise UndefinedCommand(f'Undefined command: "{word}".  Try "help".')
    rest = match.group(2)
    return match.group(1), rest.strip() if not rest.startswith("/") else rest


def find(word: str) -> Command | None:
    """The command ``word`` names (a spelling or a unique prefix of a name), or None."""
    entry = COMMANDS.get(word)
    if entry is not None:
        return entry
    names = {e.name: e for spelling, e in COMMANDS.items() if spelling.startswith(word)}
    if len(names) == 1:
        return next(iter(names.values()))
    return None


def lookup(word: str) -> Command:
    """The command ``word`` names; gdb's error when it names none or several."""
    entry = find(word)
    if entry is not None:
        return entry
    candidates = sorted({e.name for spelling, e in COMMANDS.items() if spelling.startswith(word)})
    if candidates:
        raise UndefinedCommand(f'Ambiguous command "{word}": {", ".join(candidates)}.')
    raise UndefinedCommand(f'Undefined command: "{word}".  Try "help".')


def is_command_word(word: str) -> bool:
    """Whether ``word`` starts a command line (a spelling, or a unique prefix of a name)."""
    return find(word) is not None


def run_control_names() -> frozenset[str]:
    return frozenset(n for n, e in COMMANDS.items() if e.runs_guest)
