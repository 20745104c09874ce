"""The engine's model: what the user asked for (requests), how each is served
(mechanisms), and why the guest stopped (stops)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.Enum):
    """How the user wants a breakpoint served."""

    AUTO = "auto"
    HW = "hw"
    SW = "sw"


class Access(enum.Enum):
    """What a watchpoint watches (gdb's watch, rwatch, awatch)."""

    WRITE = "write"
    READ = "read"
    ACCESS = "access"


class Mechanism(enum.Enum):
    """How a request is served; the value is what the user sees."""

    HW_EXECUTE = "hardware execute slot"
    INT3 = "int3 trap"
    HLT_TRAP = "hlt trap"
    HW_DATA = "hardware data slot"
    PAGE_TRAP = "page trap"
    STEP_COMPARE = "single-step compare"
    #: Inserted by a GDB stub itself (QEMU's Z0; the guest would take a
    #: trap byte the engine wrote).
    STUB_BREAKPOINT = "stub breakpoint (Z0)"
    STUB_HW_BREAKPOINT = "stub hw breakpoint (Z1)"
    STUB_WATCH = "stub watchpoint (Z2-Z4)"
    #: A jump to a VMM-owned trampoline that counts in the guest, without
    #: an exit per hit (unconditional tracepoints on the native target).
    IN_GUEST_PROBE = "in-guest probe"
    #: The target counts executions itself and never stops for them
    #: (``exec_counting`` targets: QEMU TCG with kvmbench's plugin);
    #: unconditional tracepoints only.
    PLUGIN_COUNTER = "plugin counter"

    @property
    def is_software_trap(self) -> bool:
        """A trap byte the engine writes into guest code itself."""
        return self in SOFTWARE_TRAPS

    @property
    def counts_only(self) -> bool:
        """Serves only requests that count and never stop (tracepoints
        without a condition): a condition needs another mechanism."""
        return self in (Mechanism.IN_GUEST_PROBE, Mechanism.PLUGIN_COUNTER)

    @property
    def counted_by_target(self) -> bool:
        """The target counts the hits itself, also when the engine steps the
        instruction: the engine never counts them (nor arms anything)."""
        return self is Mechanism.PLUGIN_COUNTER

    @property
    def is_stub(self) -> bool:
        """Inserted and removed by the target itself."""
        return self in (Mechanism.STUB_BREAKPOINT, Mechanism.STUB_HW_BREAKPOINT,
                        Mechanism.STUB_WATCH)


#: The mechanisms that write a trap byte into guest code. A tuple: hit paths
#: test membership by identity, without the property call or Enum.__hash__.
SOFTWARE_TRAPS = (Mechanism.INT3, Mechanism.HLT_TRAP)


class StopOn(enum.Enum):
    """When a write watch stops the guest (it counts every store either way)."""

    #: Only when the store changed the watched value, as gdb's ``watch``.
    CHANGE = "change"
    #: At every store, including one that writes the value already there.
    STORE = "store"


#: A condition is an expression over registers and memory, or a callable
#: given the session that returns truthy to stop.
Condition = str | Callable[[Any], object] | None


@dataclass(eq=False)
class Breakpoint:
    """An execution breakpoint (or tracepoint: counts and continues)."""

    number: int
    location: str
    address: int
    kind: Kind = Kind.AUTO
    condition: Condition = None
    ignore_count: int = 0
    temporary: bool = False
    enabled: bool = True
    tracepoint: bool = False
    hit_count: int = 0
    mechanism: Mechanism | None = None
    slot: str | None = None
    #: Why the planner chose this mechanism, in one line.
    reason: str = ""
    #: Internal breakpoints (finish, until, nexti) are not shown to the user.
    internal: bool = False
    #: The one mechanism the user asked for, if any (else the planner picks).
    requested: Mechanism | None = None

    @property
    def served_by(self) -> str:
        """'DR1', 'hlt trap', ... as shown in breakpoint tables."""
        if self.mechanism is None:
            return "pending"
        return self.slot if self.slot else self.mechanism.value

    def __str__(self) -> str:
        what = "tracepoint" if self.tracepoint else "breakpoint"
        return f"{what} {self.number} ({self.location})"


@dataclass(eq=False)
class Watchpoint:
    """A data watchpoint over ``length`` bytes at ``address``."""

    number: int
    location: str
    address: int
    length: int
    access: Access = Access.WRITE
    kind: Kind = Kind.AUTO
    condition: Condition = None
    ignore_count: int = 0
    enabled: bool = True
    tracepoint: bool = False
    hit_count: int = 0
    mechanism: Mechanism | None = None
    slots: tuple[str, ...] = ()
    reason: str = ""
    requested: Mechanism | None = None
    #: Write watches: stop on a changed value (gdb) or at every store.
    stop_on: StopOn = StopOn.CHANGE
    #: The watched bytes as the engine last saw them (old value of the next hit).
    value: bytes = b""
    last_writer: int | None = None

    @property
    def served_by(self) -> str:
        if self.mechanism is None:
            return "pending"
        return ",".join(self.slots) if self.slots else self.mechanism.value

    def __str__(self) -> str:
        return f"watchpoint {self.number} ({self.location})"


class RunState(enum.Enum):
    """Where a session's guest is: stopped (inspectable), running, or gone."""

    STOPPED = "stopped"
    RUNNING = "running"
    EXITED = "exited"
    CRASHED = "crashed"
    CLOSED = "closed"


# --- stops ---------------------------------------------------------------------


class StopReason(enum.Enum):
    BREAKPOINT = "breakpoint"
    WATCHPOINT = "watchpoint"
    STEP = "step"
    FINISH = "finish"
    LOCATION = "location reached"
    PAUSED = "paused"
    EXITED = "exited"
    CRASHED = "crashed"
    GUEST_TRAP = "guest trap"
    #: The guest halted with nothing that could wake it (``cli; hlt``).
    HALTED = "halted"


@dataclass(frozen=True)
class Stop:
    """Why the guest stopped and where. ``pc`` is None once the guest is gone."""

    reason: StopReason
    pc: int | None
    breakpoint: int | None = None
    watchpoint: int | None = None
    mechanism: Mechanism | None = None
    exit_code: int | None = None
    detail: str = ""
    old_value: int | None = None
    new_value: int | None = None
    access_address: int | None = None
    #: For a watchpoint: the instruction that made the access (``pc`` is
    #: where the guest stands, past it once the access has retired).
    writer: int | None = None
    return_value: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        """False once the guest exited or crashed: nothing more to run."""
        return self.reason not in (StopReason.EXITED, StopReason.CRASHED)

    def describe(self) -> str:
        """One line, as a terminal debugger would print it."""
        where = f" at {self.pc:#x}" if self.pc is not None else ""
        if self.reason is StopReason.BREAKPOINT:
            how = f" ({self.mechanism.value})" if self.mechanism else ""
            text = f"breakpoint {self.breakpoint}{how}{where}"
        elif self.reason is StopReason.WATCHPOINT:
            text = f"watchpoint {self.watchpoint}{where}: {self.old_value} -> {self.new_value}"
        elif self.reason is StopReason.EXITED:
            text = (f"guest exited with code {self.exit_code}" if self.exit_code is not None
                    else "guest exited")
        elif self.reason is StopReason.FINISH:
            text = f"returned{where}, value {self.return_value}"
        else:
            text = f"{self.reason.value}{where}"
        return f"{text}: {self.detail}" if self.detail else text
