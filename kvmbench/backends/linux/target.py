"""A booted Linux guest as a debug :class:`~kvmbench.backends.target.Target`.

Stops (breakpoints, steps, pauses) go through QEMU's gdbstub, as for any
stub (:class:`~kvmbench.backends.gdbremote.target.GdbRemoteTarget`); its
vCPUs are the stub's threads, and the thread a stop reports is the CPU
that stopped (QEMU 7.2 makes it the current thread for registers and
steps: gdbstub.c ``gdb_set_stop_cpu``). Under TCG the target also counts
executions of chosen addresses without stopping the guest, through
kvmbench's TCG plugin (:class:`~kvmbench.backends.linux.plugin.ExecCounter`),
which the planner offers as the "plugin counter" mechanism.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kvmbench.backends.gdbremote.client import GdbRemoteClient
from kvmbench.backends.gdbremote.events import TargetStop
from kvmbench.backends.gdbremote.target import GdbRemoteTarget
from kvmbench.backends.linux.plugin import PluginError
from kvmbench.backends.target import ExecCounting, TargetCapabilities
from kvmbench.errors import BreakpointError

if TYPE_CHECKING:
    from kvmbench.backends.linux.machine import LinuxMachine


class LinuxTarget(GdbRemoteTarget):
    """QEMU running a Linux guest: its gdbstub, plus the counting plugin's
    table when the machine was booted with it (TCG only)."""

    def __init__(self, machine: "LinuxMachine", client: GdbRemoteClient) -> None:
        self.machine = machine
        qemu = machine.qemu
        super().__init__(client, name=f"qemu linux ({machine.options.accel})",
                         console=lambda: qemu.console, exit_code=qemu.wait_exit,
                         on_close=machine.close)
        base = super().capabilities
        if machine.counter is not None:
            counting = ExecCounting("TCG plugin", machine.counter.capacity)
            self._linux_capabilities = replace(base, exec_counting=counting)
        else:
            why = ("QEMU loads no TCG plugins under KVM" if machine.options.accel == "kvm"
                   else "the machine was booted without kvmbench's counting plugin")
            self._linux_capabilities = replace(base, exec_counting_unavailable=why)

    @classmethod
    def attach(cls, machine: "LinuxMachine") -> "LinuxTarget":
        """Connect to the machine's gdbstub (the guest stays stopped)."""
        client = GdbRemoteClient.connect(machine.gdb_address)
        try:
            return cls(machine, client)
        except BaseException:
            client.close()
            raise

    @property
    def capabilities(self) -> TargetCapabilities:
        return self._linux_capabilities

    @property
    def cpu(self) -> int | None:
        """The CPU (0-based) the last stop was reported for: QEMU numbers
        its vCPU threads from 1 (``p01.01`` is CPU 0)."""
        stop = self.client.last_stop
        if isinstance(stop, TargetStop) and stop.thread is not None and stop.thread.tid > 0:
            return stop.thread.tid - 1
        return None

    # --- counting without stopping ----------------------------------------------------

    def count_executions(self, addresses: Sequence[int]) -> None:
        counter = self.machine.counter
        if counter is None:
            raise BreakpointError(f"the {self.name} target counts nothing itself: "
                                  f"{self._linux_capabilities.exec_counting_unavailable}")
        try:
            counter.add(*addresses)
        except PluginError as e:
            raise BreakpointError(str(e)) from None

    def stop_counting(self, addresses: Sequence[int]) -> None:
        if self.machine.counter is not None:
            self.machine.counter.remove(*addresses)

    def execution_counts(self) -> Mapping[int, int]:
        counter = self.machine.counter
        return counter.counts() if counter is not None else {}
