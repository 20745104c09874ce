"""gdb commands kvmbench does not do, answered as gdb answers a feature the
target lacks (``You can't do that when your target is `kvmbench'``)."""

from __future__ import annotations

from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench

_TARGET = "You can't do that when your target is `kvmbench'"


def _refuse(wb: Workbench, args: str) -> object:
    """Not supported by the kvmbench target."""
    raise UsageError(_TARGET)


for _name, _what in (
    ("catch", "catch EVENT: catchpoints (exceptions, syscalls, forks) need an operating system's events; not on this target."),
    ("signal", "signal SIG: guests have no Unix signals; not on this target."),
    ("handle", "handle SIG ACTIONS: guests have no Unix signals; not on this target."),
    ("record", "record: execution recording is not supported by this target."),
    ("reverse-step", "reverse-step: needs recording; not on this target."),
    ("reverse-next", "reverse-next: needs recording; not on this target."),
    ("reverse-continue", "reverse-continue: needs recording; not on this target."),
    ("reverse-finish", "reverse-finish: needs recording; not on this target."),
    ("checkpoint", "checkpoint: forks of the debugged process; not on this target."),
    ("detach", "detach: the notebook keeps its guest; %gdbserver serves it to gdb."),
    ("jump", "jump LOCATION: set $pc instead (set var $pc = ADDRESS)."),
    ("return", "return: popping frames is not supported by this target."),
    ("tty", "tty: guests have no terminal of the debugger's."),
    ("core-file", "core-file: kvmbench debugs live guests."),
    ("generate-core-file", "generate-core-file: not supported by this target."),
):
    def _make(doc: str):  # type: ignore[no-untyped-def]
        def handler(wb: Workbench, args: str) -> object:
            raise UsageError(_TARGET)
        handler.__doc__ = doc
        return handler

    command(_name, guest=False, family="unsupported")(_make(_what))
