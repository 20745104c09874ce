"""Any GDB remote stub as a debug :class:`~kvmbench.backends.target.Target`.

Under a stub the guest owns its trap bytes (a planted int3 would be taken
by the guest itself), so breakpoints are the stub's own Z0/Z1 and
watchpoints its Z2-Z4, each found by trying (:class:`TargetCapabilities`
says which the stub accepted at attach). There is no physical memory and
no slot table: the stub manages both. Registers are read with one ``g``
when first asked after a stop (a hit needs rip, rsp and rbp at least, and
QEMU answers ``g`` about as fast as one ``p``), then cached until the
guest runs.

QEMU 7.2 facts this relies on (DESIGN.md): stop replies carry neither the
pc nor the kind of breakpoint, so the pc is read after each stop and a
trap at one of our inserted addresses is our breakpoint; a breakpoint at
the resume pc fires again at once, so the engine steps off it first (a
single-step steps over it with the breakpoint still inserted); a guest
that exits through isa-debug-exit closes the connection without a ``W``,
so whoever started the stub supplies the exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence

from kvmbench.arch import x86_64
from kvmbench.backends.capabilities import Feature, HostCapabilities, ProbeResult
from kvmbench.backends.gdbremote.client import GdbRemoteClient
from kvmbench.backends.gdbremote.events import (
    StopEvent,
    TargetDisconnected,
    TargetExit,
    TargetKilled,
    TargetStop,
)
from kvmbench.backends.target import (
    CONTINUE,
    Exited,
    GuestDebugTrap,
    Paused,
    Resume,
    ResumeMode,
    SlotProgram,
    Stepped,
    StubAccess,
    StubBreakpointHit,
    StubWatchHit,
    TargetCapabilities,
    TargetEvent,
)
from kvmbench.errors import (
    GuestError,
    GuestMemoryError,
    KvmbenchError,
    RemoteError,
    SessionStateError,
    UsageError,
)
from kvmbench.rsp.breakpoints import BreakpointType
from kvmbench.rsp.stops import WatchKind

_GPRS = tuple(x86_64.KVM_REGS_FIELDS)
_MASK64 = (1 << 64) - 1
#: After a stub reports the guest's exit, how long its launcher may take to end.
EXIT_SETTLE_TIMEOUT = 2.0
_BREAKPOINT_TYPES = {"sw": BreakpointType.SOFTWARE, "hw": BreakpointType.HARDWARE}
_WATCH_TYPES = {StubAccess.WRITE: BreakpointType.WRITE_WATCH,
                StubAccess.READ: BreakpointType.READ_WATCH,
                StubAccess.ACCESS: BreakpointType.ACCESS_WATCH}
_WATCH_ACCESS = {WatchKind.WRITE: StubAccess.WRITE, WatchKind.READ: StubAccess.READ,
                 WatchKind.ACCESS: StubAccess.ACCESS}


def _gdb_name(name: str) -> str:
    """gdb's name for a register (the protocol says "eflags", kvm "rflags")."""
    return "eflags" if name == "rflags" else name


def stub_features(name: str, step: bool) -> HostCapabilities:
    """What the engine may ask of a stub, as probe results: single-steps,
    and none of the KVM host facts (traps, slots, memslots are the stub's)."""
    why = f"a GDB stub ({name}) manages its own breakpoints and memory"
    results = [ProbeResult(f, False, why) for f in Feature]
    results = [r if r.feature is not Feature.SINGLE_STEP else
               ProbeResult(Feature.SINGLE_STEP, step, "" if step else f"{name} cannot single-step")
               for r in results]
    return HostCapabilities.from_results(name, results)


class GdbRemoteTarget:
    """A guest behind a GDB remote stub, driven through one
    :class:`~kvmbench.backends.gdbremote.client.GdbRemoteClient`."""

    def __init__(
        self,
        client: GdbRemoteClient,
        *,
        name: str = "gdbremote",
        console: Callable[[], str] | None = None,
        exit_code: Callable[[float], int | None] | None = None,
        on_close: Callable[[], None] | None = None,
        probe_address: int | None = None,
    ) -> None:
        """``console`` gives the guest's output where the stub does not
        carry it; ``exit_code(timeout)`` the guest's exit code once the
        stub closed the connection (QEMU); ``on_close`` ends what started
        the stub. ``probe_address`` is an address where trying Z packets
        is harmless (default: where the guest stands)."""
        self.client = client
        self.name = name
        self._console = console
        self._exit_code = exit_code
        self._on_close = on_close
        self._closed = False
        #: An event that ended steps early, reported by the next resume.
        self._pending: TargetEvent | None = None
        #: Registers known since the last stop; all of them once ``_fetched``.
        self._regs: dict[str, int] = {}
        self._fetched = False
        self._pc: int | None = None
        #: Register writes not sent yet: all go in one round trip before the
        #: guest runs (a breakpoint's step-off writes rsp and rip).
        self._dirty: dict[str, int] = {}
        #: Memory read ahead at this stop (address, bytes): the stack top and
        #: the code at pc, which every hit reads (its caller; the push it
        #: emulates). Dropped when the guest runs or memory is written.
        self._snapshot: list[tuple[int, bytes]] = []
        self._inserted: dict[tuple[int, str], int] = {}  # (address, kind) -> users
        self._capabilities = self._probe(probe_address)

    # --- what the stub offers ------------------------------------------------------

    def _probe(self, address: int | None) -> TargetCapabilities:
        """Ask the stub which breakpoint and watchpoint kinds it inserts, by
        trying each once where the guest stands (and removing it)."""
        client = self.client
        where = self.pc if address is None else address
        breakpoints = frozenset(
            kind for kind, type_ in _BREAKPOINT_TYPES.items()
            if client.insert_breakpoint(type_, where) and client.remove_breakpoint(type_, where))
        aligned = where & ~7
        watches = frozenset(
            access for access, type_ in _WATCH_TYPES.items()
            if client.insert_breakpoint(type_, aligned, 8) and client.remove_breakpoint(type_, aligned, 8))
        step = bool({"s", "S"} & set(client.vcont_actions)) or not client.vcont_actions
        return TargetCapabilities(
            name=self.name,
            features=stub_features(self.name, step),
            stub_breakpoints=breakpoints,
            stub_watchpoints=watches,
        )

    @property
    def capabilities(self) -> TargetCapabilities:
        return self._capabilities

    @property
    def console(self) -> str:
        return self._console() if self._console is not None else ""

    @property
    def closed(self) -> bool:
        return self._closed

    # --- registers -------------------------------------------------------------------

    def read_register(self, name: str) -> int:
        key = _gdb_name(name)
        if not self._fetched:
            self._fetch()
        value = self._regs.get(key)
        if value is None:
            value = self.client.read_register(key) if self.client.layout.by_name(key) else None
            if value is None:
                raise UsageError(f"the {self.name} stub has no register {name!r}")
            self._regs[key] = value
        return value

    def write_register(self, name: str, value: int) -> None:
        key = _gdb_name(name)
        if self.client.layout.by_name(key) is None:
            raise UsageError(f"the {self.name} stub has no register {name!r}")
        if not self._fetched:
            self._fetch()  # a later fetch must not overwrite what we wrote
        self._dirty[key] = self._regs[key] = value & _MASK64
        if key == "rip":
            self._pc = value & _MASK64

    def _flush_registers(self) -> None:
        """Send the register writes made since the stop, in one round trip."""
        if self._dirty:
            dirty, self._dirty = self._dirty, {}
            self.client.write_register_values(dirty)

    def _fetch(self) -> None:
        values = self.client.read_registers()
        self._regs.update((name, value) for name, value in values.items() if value is not None)
        self._regs.update(self._dirty)
        self._fetched = True

    def read_registers(self) -> Mapping[str, int]:
        if not self._fetched:
            self._fetch()
        regs = self._regs
        return {name: regs[_gdb_name(name)] for name in _GPRS if _gdb_name(name) in regs}

    @property
    def pc(self) -> int:
        if self._pc is None:
            self._pc = self.read_register("rip")
        return self._pc

    def set_pc(self, pc: int) -> None:
        self.write_register("rip", pc)

    # --- memory -----------------------------------------------------------------------

    def read_memory(self, address: int, length: int) -> bytes:
        for start, data in self._snapshot:
            if start <= address and address + length <= start + len(data):
                return data[address - start : address - start + length]
        try:
            return self.client.read_memory(address, length)
        except RemoteError as e:
            raise GuestMemoryError(f"cannot read {length} bytes at {address:#x}: {e}") from None

    def _read_ahead(self, pc: int) -> None:
        """Read the stack top and the code at ``pc`` in one round trip."""
        ranges = [(pc, 16)]
        rsp = self._regs.get("rsp")
        if rsp is not None:
            ranges.append((rsp, 16))
        try:
            found = self.client.read_memory_many(ranges)
        except RemoteError:
            return  # read on demand, with the error where it belongs
        self._snapshot = [(start, data) for (start, _), data in zip(ranges, found) if data is not None]

    def write_memory(self, address: int, data: bytes) -> None:
        self._snapshot = []
        try:
            self.client.write_memory(address, data)
        except RemoteError as e:
            raise GuestMemoryError(f"cannot write {len(data)} bytes at {address:#x}: {e}") from None

    def translate(self, address: int) -> int:
        raise GuestMemoryError(f"the {self.name} stub translates no addresses")

    def read_physical(self, address: int, length: int) -> bytes:
        raise GuestMemoryError(f"the {self.name} stub has no physical memory access")

    def write_physical(self, address: int, data: bytes) -> None:
        raise GuestMemoryError(f"the {self.name} stub has no physical memory access")

    def contains_physical(self, address: int, length: int = 1) -> bool:
        return False

    def flush_translations(self) -> None:
        pass

    def flush_console(self) -> None:
        pass

    # --- mechanisms ---------------------------------------------------------------------

    def set_debug_slots(self, slots: Sequence[SlotProgram]) -> None:
        if slots:
            raise UsageError(f"the {self.name} stub manages its own debug slots")

    def set_software_traps(self, opcodes: frozenset[int], intercept_guest_traps: bool) -> None:
        pass  # the guest owns its trap bytes here

    def set_write_traps(self, pages: frozenset[int]) -> None:
        if pages:
            raise UsageError(f"the {self.name} stub has no write traps")

    def insert_stub_breakpoint(self, address: int, kind: str) -> bool:
        key = (address, kind)
        if key not in self._inserted:
            if not self.client.insert_breakpoint(_BREAKPOINT_TYPES[kind], address):
                return False
        self._inserted[key] = self._inserted.get(key, 0) + 1
        return True

    def remove_stub_breakpoint(self, address: int, kind: str) -> None:
        key = (address, kind)
        users = self._inserted.get(key, 0) - 1
        if users > 0:
            self._inserted[key] = users
            return
        self._inserted.pop(key, None)
        if not self._closed:
            self.client.remove_breakpoint(_BREAKPOINT_TYPES[kind], address)

    def insert_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> bool:
        return self.client.insert_breakpoint(_WATCH_TYPES[access], address, length)

    def remove_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> None:
        if not self._closed:
            self.client.remove_breakpoint(_WATCH_TYPES[access], address, length)

    # --- running --------------------------------------------------------------------------

    def pause(self) -> None:
        if not self._closed:
            self.client.interrupt()

    def resume(self, how: Resume = CONTINUE) -> TargetEvent:
        if self._closed:
            raise SessionStateError(f"the {self.name} target is closed")
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        self._flush_registers()  # a refused write raises here, the guest not run
        try:
            if how.mode is ResumeMode.STEP:
                return self._steps(how.count, how.stop_at)
            self._forget_registers()
            return self._translate(self.client.cont(), stepping=False)
        except RemoteError as e:
            # A stub that dropped the connection or broke the protocol while
            # the guest ran: that run ends here, as a crash the user can read.
            self._closed = True
            raise GuestError(str(e)) from None

    def _steps(self, count: int, stop_at: Container[int]) -> TargetEvent:
        """Single-steps, one packet each; the stub holds interrupts off while
        stepping (QEMU's default single-step flags mask IRQs and timers)."""
        done = 0
        while True:
            pc = self.pc
            self._forget_registers()
            event = self._translate(self.client.step(pc=pc), stepping=True)
            if isinstance(event, Paused):
                return Paused(event.pc, done)
            if not isinstance(event, Stepped):
                if done:
                    # Steps done come first; the event that ended them is
                    # reported by the next resume (the protocol's rule).
                    self._pending = event
                    return Stepped(self.pc, done)
                return event
            done += 1
            if done >= count or event.pc in stop_at:
                return Stepped(event.pc, done)

    def _forget_registers(self) -> None:
        self._regs = {}
        self._fetched = False
        self._pc = None
        self._snapshot = []

    def _translate(self, stop: StopEvent, stepping: bool) -> TargetEvent:
        if isinstance(stop, TargetExit):
            if self._exit_code is not None:
                self._exit_code(EXIT_SETTLE_TIMEOUT)  # a launched stub ends too: its console is complete
            return Exited(stop.code)
        if isinstance(stop, TargetKilled):
            raise GuestError(f"the {self.name} stub reports the guest killed (signal {stop.signal})")
        if isinstance(stop, TargetDisconnected):
            code = self._exit_code(5.0) if self._exit_code is not None else None
            self._closed = True
            if code is None:
                return Exited(None, f"the {self.name} stub closed the connection")
            return Exited(code)
        assert isinstance(stop, TargetStop)
        self._regs = {name: value for name, value in stop.registers.items() if value is not None}
        self._fetched = False
        self._pc = self._regs.get("rip")
        pc = self.pc
        if stop.watch is not None:
            return StubWatchHit(stop.watch.address, _WATCH_ACCESS[stop.watch.kind], pc)
        if stop.is_interrupt:
            return Paused(pc)
        if stepping:
            return Stepped(pc)
        if (pc, "sw") in self._inserted or (pc, "hw") in self._inserted:
            self._read_ahead(pc)
            return StubBreakpointHit(pc)
        return GuestDebugTrap(1 if stop.is_trap else stop.signal, pc)

    def hand_back(self, event: TargetEvent) -> TargetEvent | None:
        # The stub reports only what it was asked to catch; the guest's own
        # traps went to the guest without us. Nothing to give back.
        return None

    def run_to(self, address: int) -> None:
        """Run the guest to ``address`` (where kvmbench's VMM would start it),
        with a breakpoint the stub inserts and removes."""
        if not self.insert_stub_breakpoint(address, "sw"):
            raise KvmbenchError(f"the {self.name} stub refused a breakpoint at {address:#x}")
        try:
            event = self.resume()
        finally:
            if not self._closed:
                self.remove_stub_breakpoint(address, "sw")
        if not isinstance(event, StubBreakpointHit) or event.pc != address:
            raise GuestError(f"the guest never reached {address:#x} under {self.name}: {event}")

    def close(self) -> None:
        if self._closed:
            if self._on_close is not None:
                self._on_close()
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            if self._on_close is not None:
                self._on_close()
