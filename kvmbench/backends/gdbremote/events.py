"""What resuming a remote target ends in, typed: the stub's stop replies
turned into results with names instead of register numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kvmbench.rsp.stops import GDB_SIGINT, GDB_SIGTRAP, WatchHit, WatchKind
from kvmbench.rsp.threads import ThreadId

__all__ = ["TargetStop", "TargetExit", "TargetKilled", "TargetDisconnected", "StopEvent", "WatchHit", "WatchKind"]


@dataclass(frozen=True)
class TargetStop:
    """The target stopped with gdb signal ``signal`` (5 a trap: breakpoint,
    watchpoint or step; 2 an interrupt), reported for ``thread`` (a vCPU).

    ``watch`` is the watchpoint hit and its data address, if the stub says;
    ``swbreak``/``hwbreak`` are set only by stubs that report the kind
    (QEMU 7.2 reports neither, nor the pc); ``registers`` holds the
    registers the stub sent with the stop (expedited), by name.
    """

    signal: int
    thread: ThreadId | None = None
    watch: WatchHit | None = None
    swbreak: bool = False
    hwbreak: bool = False
    registers: Mapping[str, int | None] = field(default_factory=dict)

    @property
    def is_trap(self) -> bool:
        return self.signal == GDB_SIGTRAP

    @property
    def is_interrupt(self) -> bool:
        return self.signal == GDB_SIGINT


@dataclass(frozen=True)
class TargetExit:
    """The stub reported the target's exit (``W``) with ``code``."""

    code: int


@dataclass(frozen=True)
class TargetKilled:
    """The stub reported the target terminated by ``signal`` (``X``)."""

    signal: int


@dataclass(frozen=True)
class TargetDisconnected:
    """The stub closed the connection while the target ran. QEMU 7.2 does
    that, without a ``W``, when the guest exits through isa-debug-exit: ask
    whoever started QEMU for the exit code."""


StopEvent = TargetStop | TargetExit | TargetKilled | TargetDisconnected
