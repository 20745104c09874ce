"""The boundary between the breakpoint engine and whatever runs the guest.

A :class:`Target` is one debuggable machine: kvmbench's own VMM on /dev/kvm
(:mod:`kvmbench.backends.kvm.target`), or any GDB remote stub such as
QEMU's (:mod:`kvmbench.backends.gdbremote`). The engine drives a target
only through this protocol and its typed events; what a target can do is a
query on it (:class:`TargetCapabilities`), so the planner never asks a
target for a mechanism it does not offer.

Events are what the engine must decide about; acting on the decision
(counting a hit, handing a trap back to the guest, stepping off a
breakpoint) is a separate call. Host tricks live in the backend that needs
them: the hlt trap and the undelivered int3 are KVM facts, and a backend
reports both as a :class:`TrapExecuted` at the trap's address.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvmbench.arch.displacement import Displacement
from kvmbench.arch.profiles import DebugProfile, SlotKind
from kvmbench.backends.capabilities import Feature, HostCapabilities

# --- what a target offers -------------------------------------------------------


@dataclass(frozen=True)
class SoftwareTrap:
    """A one-byte trap the engine may write into guest code itself."""

    #: The engine's mechanism name for it ("int3 trap", "hlt trap").
    name: str
    opcode: int


@dataclass(frozen=True)
class ProbeSupport:
    """The target runs in-guest probes: trampolines in memory it owns,
    mapped for the guest at guest-virtual ``area`` [start, end), which a
    ``jmp rel32`` reaches from code within 2 GiB of it. A trampoline counts
    a hit into a ring of ``ring_entries`` entries without an exit; the
    target reports :class:`ProbesDue` when the ring fills, and every
    ``drain_interval`` seconds of a continuing run."""

    area: tuple[int, int]
    ring_entries: int
    drain_interval: float


@dataclass(frozen=True)
class ExecCounting:
    """The target counts executions of chosen guest-virtual addresses
    itself, without stopping the guest (:meth:`Target.count_executions`):
    ``name`` is what does it (shown with the mechanism), ``capacity`` how
    many addresses it counts at once. Counts are exact from the next resume
    after a change, and can be read at any time, also while the guest runs."""

    name: str
    capacity: int


class StubAccess(enum.Enum):
    """What a target-inserted watchpoint triggers on (GDB's Z2, Z3, Z4)."""

    WRITE = "write"
    READ = "read"
    ACCESS = "access"


@dataclass(frozen=True)
class TargetCapabilities:
    """What one target can do; the planner reads nothing else.

    ``features`` holds probed facts (a KVM host's probe, or what a stub
    accepted when asked). ``slot_profile`` is set when the engine allocates
    hardware debug slots itself and the target programs them
    (:meth:`Target.set_debug_slots`); a stub that manages its own slots has
    None and offers ``stub_breakpoints`` / ``stub_watchpoints`` instead.
    """

    name: str
    features: HostCapabilities
    slot_profile: DebugProfile | None = None
    #: Traps the engine may plant, best first; empty where the guest would
    #: take a planted trap itself (under a gdbstub the guest owns int3).
    software_traps: tuple[SoftwareTrap, ...] = ()
    #: The stub inserts breakpoints itself: "sw" (Z0) and/or "hw" (Z1).
    stub_breakpoints: frozenset[str] = frozenset()
    #: The stub inserts watchpoints itself (Z2-Z4) for these accesses.
    stub_watchpoints: frozenset[StubAccess] = frozenset()
    #: Guest stores to chosen pages exit to the engine (read-only memslots).
    write_traps: bool = False
    #: Guest-physical memory is readable and translations are available.
    physical_memory: bool = False
    #: One single-step of the target can hold interrupts off.
    step_blocks_interrupts: bool = False
    #: The target counts executions itself (the "plugin counter"), or None
    #: with ``exec_counting_unavailable`` saying why.
    exec_counting: ExecCounting | None = None
    exec_counting_unavailable: str = ""
    #: Guest-physical ranges the target itself uses ([start, end), what):
    #: no trap byte or page trap may go there.
    reserved: tuple[tuple[int, int, str], ...] = ()
    #: In-guest probes (:meth:`Target.install_probe`), or None with
    #: ``probes_unavailable`` saying why.
    probes: ProbeSupport | None = None
    probes_unavailable: str = ""

    def works(self, feature: Feature) -> bool:
        return self.features.works(feature)

    def why_not(self, feature: Feature) -> str:
        return self.features.why_not(feature)


# --- events ------------------------------------------------------------------------

# Events are slotted dataclasses but not frozen: one is made per hit, and a
# frozen one costs about 1 us more to create (object.__setattr__ per field,
# measured here). Treat them as immutable.


@dataclass(slots=True)
class TrapExecuted:
    """A one-byte trap opcode at ``pc`` ran (or failed to run).

    The registers show rip == ``pc``, as if the trap had not executed. It
    may be the engine's own trap or the guest's own instruction (a guest's
    ``hlt``, its own ``int3``): the engine decides, and hands the guest's
    back with :meth:`Target.hand_back`. The engine may also hand back a
    ``hlt`` it did not let run (it never single-steps one: a stepped hlt
    does not wait on some hosts).
    """

    pc: int
    #: "int3" or "hlt".
    instruction: str = "int3"


@dataclass(slots=True)
class SlotHit:
    """Hardware debug slots fired. An execute slot stops before its
    instruction (rip at it); a data slot traps after the access."""

    slots: tuple[int, ...]
    pc: int
    dr6: int = 0


@dataclass(slots=True)
class Stepped:
    """Single-steps finished (``count`` of them), or a step stopped at an
    address the engine asked to stop at."""

    pc: int
    count: int = 1
    dr6: int = 0
    #: An interrupt was delivered during the step: its frame was pushed at
    #: ``interrupt_frame`` and the step ran the first instruction of the
    #: handler at ``interrupt_handler`` instead of the one at the old rip.
    interrupt_handler: int | None = None
    interrupt_frame: int | None = None


@dataclass(slots=True)
class StoreTrapped:
    """A guest store to a write-trapped page, not yet in memory.

    ``pieces`` are (guest-physical address, bytes): every fragment the one
    storing instruction made to trapped pages (a store across two pages
    comes as two). The target completed the instruction otherwise: rip
    (``pc``) is where the guest goes on, past the store, or still at a
    rep-prefixed string instruction with iterations left. The engine writes
    the pieces itself (through its patch table) or, for a read-modify-write
    that read one of its trap bytes, redoes the instruction.
    """

    pieces: tuple[tuple[int, bytes], ...]
    pc: int


@dataclass(frozen=True, slots=True)
class StoreStepped:
    """The target could not complete a store to trapped pages as a trap
    (fxsave, an emulator limit): it stepped the instruction at ``writer``
    with those ``pages`` writable. Memory already holds what it wrote."""

    writer: int
    pc: int
    pages: frozenset[int]


@dataclass(frozen=True, slots=True)
class StubBreakpointHit:
    """A breakpoint the target inserted itself (Z0/Z1) stopped the guest at ``pc``."""

    pc: int


@dataclass(frozen=True, slots=True)
class StubWatchHit:
    """A watchpoint the target inserted itself (Z2-Z4) triggered."""

    address: int
    access: StubAccess
    pc: int


@dataclass(frozen=True, slots=True)
class GuestDebugTrap:
    """A debug exception (#DB 1, #BP 3) the target intercepted that is none
    of the above; the engine stops or hands it back."""

    vector: int
    pc: int


@dataclass(frozen=True, slots=True)
class Paused:
    """:meth:`Target.pause` stopped the guest (after ``steps`` single-steps
    of a stepping resume)."""

    pc: int
    steps: int = 0


@dataclass(frozen=True, slots=True)
class Halted:
    """The guest halted with nothing that could ever wake it (``cli; hlt``)."""

    pc: int


@dataclass(frozen=True, slots=True)
class Exited:
    """The guest ended with ``code`` (None: a stub that closed the connection
    without saying how); nothing more runs."""

    code: int | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProbesDue:
    """In-guest probes want their hits drained (:meth:`Target.drain_probes`):
    their ring filled, or the drain interval passed. Nothing else happened;
    the run goes on."""

    pc: int


TargetEvent = (
    TrapExecuted | SlotHit | Stepped | StoreTrapped | StoreStepped | StubBreakpointHit
    | StubWatchHit | GuestDebugTrap | Paused | Halted | Exited | ProbesDue
)


# --- in-guest probes ----------------------------------------------------------------


@dataclass(frozen=True)
class ProbeInstalled:
    """A trampoline the target wrote for one displacement."""

    #: Names this probe's hits in :meth:`Target.drain_probes`.
    key: int
    #: The trampoline's [start, end).
    trampoline: tuple[int, int]
    #: What the engine plants over the displaced bytes: the jump to the
    #: trampoline, padded to the displacement's length.
    patch: bytes
    #: [start, end) of the trampoline's counting code, which runs before
    #: the displaced copies: a hit is in the ring once rip has left it.
    counting: tuple[int, int]
    #: (original address, copy's start, copy's end) of each displaced
    #: instruction; the jump back to the original code follows the last.
    copies: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ProbeHits:
    """Hits the probes counted since the last drain, oldest first, as
    parallel columns: the probe's key, when (``time.perf_counter_ns``'s
    clock) and the word at the top of the stack at the probed instruction
    (the return address at a function's entry)."""

    keys: list[int]
    time_ns: list[int]
    callers: list[int]

    def __len__(self) -> int:
        return len(self.keys)


# --- requests -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotProgram:
    """One hardware debug slot as the engine's slot table assigned it."""

    index: int
    kind: SlotKind
    address: int
    length: int = 1


class ResumeMode(enum.Enum):
    CONTINUE = "continue"
    STEP = "step"


@dataclass(frozen=True)
class Resume:
    """How to run the guest until the next event.

    ``STEP`` runs up to ``count`` single-steps and returns
    :class:`Stepped`, early when rip reaches an address in ``stop_at``; an
    event that ends the steps early comes after a :class:`Stepped` for the
    steps done, from the next resume, which then runs nothing.
    ``skip_slots_at``: execute slots at this address must not fire for the
    first instruction (the engine already reported that hit); the target
    uses RF where its host honours it, else masks them for one step.
    ``hold_interrupts``: deliver no interrupt while this resume steps.
    """

    mode: ResumeMode = ResumeMode.CONTINUE
    count: int = 1
    stop_at: Container[int] = field(default_factory=frozenset)
    skip_slots_at: int | None = None
    hold_interrupts: bool = False


CONTINUE = Resume()
STEP = Resume(ResumeMode.STEP, hold_interrupts=True)


# --- the protocol ---------------------------------------------------------------


class Target(Protocol):
    """One debuggable machine (its first vCPU is the one the engine drives).

    Every method but :meth:`pause` is called from one thread at a time, the
    one that runs the guest; :meth:`pause` may come from any thread.
    Registers and memory are only meaningful while the guest is not
    running. Errors are :class:`kvmbench.errors.KvmbenchError` subclasses:
    GuestMemoryError for memory, GuestError (crashes, shutdowns, a stub
    that died) from :meth:`resume`.
    """

    @property
    def capabilities(self) -> TargetCapabilities: ...

    @property
    def console(self) -> str:
        """Everything the guest printed so far."""
        ...

    @property
    def closed(self) -> bool: ...

    # registers (x86-64 names as in kvmbench.arch.x86_64.KVM_REGS_FIELDS, "eflags"
    # for "rflags" too, the selectors "cs".."gs" and "fs_base", "gs_base")

    def read_register(self, name: str) -> int:
        ...

    def write_register(self, name: str, value: int) -> None: ...

    def read_registers(self) -> Mapping[str, int]:
        """The general registers (gdb names, rip and eflags included)."""
        ...

    @property
    def pc(self) -> int: ...

    def set_pc(self, pc: int) -> None: ...

    # memory

    def read_memory(self, address: int, length: int) -> bytes:
        """Guest-virtual memory as it is (trap bytes the engine planted included)."""
        ...

    def write_memory(self, address: int, data: bytes) -> None: ...

    def translate(self, address: int) -> int:
        """Guest-physical address of a virtual one (``physical_memory`` targets)."""
        ...

    def read_physical(self, address: int, length: int) -> bytes: ...

    def write_physical(self, address: int, data: bytes) -> None: ...

    def contains_physical(self, address: int, length: int = 1) -> bool: ...

    def flush_translations(self) -> None:
        """Forget cached translations: the guest may have changed its page tables."""
        ...

    def flush_console(self) -> None:
        """Hand a partial last line of console output over (at a stop)."""
        ...

    # mechanisms

    def set_debug_slots(self, slots: Sequence[SlotProgram]) -> None:
        """Program exactly these hardware slots (``slot_profile`` targets)."""
        ...

    def set_software_traps(self, opcodes: frozenset[int], intercept_guest_traps: bool) -> None:
        """Which planted trap opcodes are live, and whether the guest's own
        debug traps are to be intercepted rather than left to the guest."""
        ...

    def set_write_traps(self, pages: frozenset[int]) -> None:
        """Make guest stores to these guest-physical pages exit (``write_traps``)."""
        ...

    def insert_stub_breakpoint(self, address: int, kind: str) -> bool:
        """Z0 ("sw") or Z1 ("hw") at ``address``; False if the stub refused."""
        ...

    def remove_stub_breakpoint(self, address: int, kind: str) -> None: ...

    def insert_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> bool: ...

    def remove_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> None: ...

    # in-guest probes (``probes`` targets)

    def install_probe(self, displacement: Displacement) -> ProbeInstalled:
        """Write a trampoline that counts a hit, runs the displaced
        instructions relocated and jumps back; the engine plants the patch.
        Raises ProbeRefused when it cannot (the area is full, out of reach)."""
        ...

    def remove_probe(self, key: int) -> None:
        """The engine no longer plants probe ``key``. Its trampoline stays (a
        guest context interrupted inside it returns there) and its hits
        still drain."""
        ...

    def drain_probes(self) -> ProbeHits:
        """The hits counted since the last drain; empties the ring."""
        ...

    def probe_guard_pages(self) -> frozenset[int]:
        """Guest-physical pages whose stores may unmap the probe area (the
        paging structures that map it): the engine traps stores to them."""
        ...

    def probe_area_mapped(self) -> bool:
        """Whether the guest's page tables still map the probe area where
        the trampolines expect it (checked again only after a store to a
        guard page or a CR3 change)."""
        ...

    # running

    def resume(self, how: Resume = CONTINUE) -> TargetEvent:
        """Run the guest until an event the engine must see."""
        ...

    def hand_back(self, event: TargetEvent) -> TargetEvent | None:
        """Give the guest a trap that is not the engine's, as if no debugger
        were there (its hlt waits for an interrupt, its int3 reaches its
        handler). Returns None to go on running, or an event that ends the
        run (:class:`Halted`: nothing can wake the guest)."""
        ...

    def pause(self) -> None:
        """Stop the running guest soon (thread-safe); resume returns :class:`Paused`."""
        ...

    def close(self) -> None:
        """Release the target (restore nothing: the engine restores its own patches first)."""
        ...

    # counting without stopping (``exec_counting`` targets)

    def count_executions(self, addresses: Sequence[int]) -> None:
        """Count every execution of the instructions at these addresses from
        the next resume on, from 0; raises BreakpointError when the target
        cannot count more."""
        ...

    def stop_counting(self, addresses: Sequence[int]) -> None:
        """Stop counting these addresses (their counts are forgotten)."""
        ...

    def execution_counts(self) -> Mapping[int, int]:
        """Executions of each counted address so far (any thread, any time)."""
        ...
