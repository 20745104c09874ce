"""The GDB remote backend: a client of any gdbstub (QEMU's first), at the
protocol level (:class:`~kvmbench.backends.gdbremote.client.GdbRemoteClient`)
with typed stop results (:mod:`~kvmbench.backends.gdbremote.events`) over
a packet channel (:mod:`~kvmbench.backends.gdbremote.transport`)."""

from kvmbench.backends.gdbremote.client import GdbRemoteClient
from kvmbench.backends.gdbremote.events import (
    StopEvent,
    TargetDisconnected,
    TargetExit,
    TargetKilled,
    TargetStop,
)

__all__ = ["GdbRemoteClient", "StopEvent", "TargetDisconnected", "TargetExit", "TargetKilled", "TargetStop"]
