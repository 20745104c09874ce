"""gdb-style commands: each a parser plus a call into the engine.

A :class:`Workbench` holds the kernel's session; :data:`COMMANDS` maps every
spelling (``break``, ``b``, ``br``...) to one :class:`Command`. Handlers
return display objects (:mod:`kvmbench.jupyter.display`) or None; errors are
:class:`~kvmbench.errors.KvmbenchError` whose one-line ``str()`` the front
end prints. Preconditions (a guest is open, it is stopped) are declared once
in :func:`command` and checked in :meth:`Workbench.execute`.
"""

from kvmbench.jupyter.commands import breakpoints, gdbserver, guest, inspection, linux, running  # noqa: F401 - register
from kvmbench.jupyter.commands.inspection import (
    INFO_TOPICS,
    iter_frames,
    parse_x_format,
)
from kvmbench.jupyter.commands.registry import (
    COMMANDS,
    Command,
    command,
    lookup,
    run_control_names,
    split_command,
)
from kvmbench.jupyter.commands.workbench import CARD_REGISTERS, Workbench

__all__ = [
    "CARD_REGISTERS", "COMMANDS", "INFO_TOPICS", "Command", "Workbench", "command",
    "iter_frames", "lookup", "parse_x_format", "run_control_names", "split_command",
]
