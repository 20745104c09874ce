"""gdb-style commands: each a parser plus a call into the engine.

A :class:`Workbench` holds the kernel's session and gdb's state between
commands; :data:`COMMANDS` maps every spelling (``break``, ``b``, ``br``...)
to one :class:`Command`, and :func:`lookup` takes gdb's unambiguous
prefixes too. Handlers return display objects
(:mod:`kvmbench.jupyter.display`) or None; errors are
:class:`~kvmbench.errors.KvmbenchError` whose one-line ``str()`` the front
end prints, worded as gdb words them. Preconditions (a guest is open, it
is stopped) are declared once in :func:`command` and checked in
:meth:`Workbench.execute`.
"""

from kvmbench.jupyter.commands import (  # noqa: F401 - register
    breakpoints,
    data,
    frames,
    gdbserver,
    guest,
    inspection,
    linux,
    running,
    source,
    unsupported,
)
from kvmbench.jupyter.commands.data import parse_x_format
from kvmbench.jupyter.commands.guest import help_text
from kvmbench.jupyter.commands.inspection import INFO_TOPICS, iter_frames
from kvmbench.jupyter.commands.registry import (
    COMMANDS,
    Command,
    UndefinedCommand,
    command,
    find,
    is_command_word,
    lookup,
    run_control_names,
    split_command,
)
from kvmbench.jupyter.commands.workbench import CARD_REGISTERS, Workbench

__all__ = [
    "CARD_REGISTERS", "COMMANDS", "INFO_TOPICS", "Command", "UndefinedCommand", "Workbench", "command",
    "find", "help_text", "is_command_word", "iter_frames", "lookup", "parse_x_format",
    "run_control_names", "split_command",
]
