"""A session's :class:`~kvmbench.engine.model.Stop` as a stop reply.

GDB manual, "Stop Reply Packets": ``T05`` with ``swbreak:``/``hwbreak:``
for a breakpoint (only to a client that announced it understands them in
``qSupported``; the pc already stands at the breakpoint, nothing to
adjust), ``watch:``/``rwatch:``/``awatch:`` and the data address for a
watchpoint, ``T02`` for an interrupt, ``W`` with the exit code for an
exit. Every ``T`` carries the thread and the registers a client needs to
show the first frame (rbp, rsp, rip), so it does not have to ask for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvmbench.engine.model import Access, Mechanism, Stop, StopReason, Watchpoint
from kvmbench.rsp.hexdata import le_bytes
from kvmbench.rsp.stops import (
    GDB_SIGINT,
    GDB_SIGTRAP,
    Exited,
    Stopped,
    StopReply,
    WatchHit,
    WatchKind,
)
from kvmbench.rsp.threads import ThreadId

#: gdb's signal numbers (include/gdb/signals.def).
GDB_SIGSEGV = 11
#: The one thread a kvmbench guest has: its vCPU.
VCPU_THREAD = ThreadId(1)

_WATCH_KIND = {Access.WRITE: WatchKind.WRITE, Access.READ: WatchKind.READ,
               Access.ACCESS: WatchKind.ACCESS}


@dataclass(frozen=True)
class ClientStopFeatures:
    """Which stop reasons the client said it understands (``qSupported``)."""

    swbreak: bool = False
    hwbreak: bool = False


def stop_reply(
    stop: Stop,
    registers: Callable[[], dict[int, bytes]],
    client: ClientStopFeatures,
    watchpoint: Callable[[int], Watchpoint | None],
    report_request: Callable[[int | None], bool],
) -> StopReply:
    """The reply for ``stop``. ``registers`` gives the expedited registers
    (number: bytes), ``watchpoint`` looks a request up, and
    ``report_request`` says whether the breakpoint or watchpoint that
    stopped the guest is one to report (not one the client removed)."""
    if stop.reason is StopReason.EXITED:
        return Exited(stop.exit_code or 0)
    signal = GDB_SIGTRAP
    swbreak = hwbreak = False
    watch = None
    if stop.reason is StopReason.PAUSED:
        signal = GDB_SIGINT
    elif stop.reason is StopReason.CRASHED:
        signal = GDB_SIGSEGV
    elif stop.reason is StopReason.BREAKPOINT and report_request(stop.breakpoint):
        hardware = stop.mechanism in (Mechanism.HW_EXECUTE, Mechanism.STUB_HW_BREAKPOINT)
        hwbreak = hardware and client.hwbreak
        swbreak = not hardware and client.swbreak
    elif stop.reason is StopReason.WATCHPOINT and stop.watchpoint is not None \
            and report_request(stop.watchpoint):
        wp = watchpoint(stop.watchpoint)
        if wp is not None:
            address = stop.access_address
            if address is None or not wp.address <= address < wp.address + wp.length:
                address = wp.address
            watch = WatchHit(_WATCH_KIND[wp.access], address)
    regs = registers() if stop.pc is not None else {}
    return Stopped(signal, thread=VCPU_THREAD, registers=regs, watch=watch,
                   swbreak=swbreak, hwbreak=hwbreak)


def expedite(values: dict[int, int], sizes: dict[int, int]) -> dict[int, bytes]:
    """Register values (number: int) as the bytes a ``T`` reply carries."""
    return {n: le_bytes(v, sizes[n]) for n, v in values.items()}
