"""A debug session over one guest: the shared breakpoint engine and run control.

The session owns the guest (a :class:`~kvmbench.backends.kvm.machine.Machine`),
serves every breakpoint and watchpoint by the mechanism the planner picks,
and turns what the machine reports into :class:`~kvmbench.engine.model.Stop`
values. Run control (``cont``, ``stepi``...) blocks the calling thread;
:meth:`Session.pause` may be called from any other thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmbench.arch import instructions
from kvmbench.arch.profiles import X86_64, SlotKind
from kvmbench.arch.x86_64 import Dr6, Rflags
from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.backends.kvm import abi
from kvmbench.backends.kvm.exits import Debug, Hlt, Mmio
from kvmbench.backends.kvm.machine import (
    GuestExited,
    Int3Undelivered,
    Machine,
    MachineEvent,
    Paused,
)
from kvmbench.engine.conditions import CompiledCondition, ConditionNames
from kvmbench.engine.hitlog import HitLog
from kvmbench.engine.model import (
    Access,
    Breakpoint,
    Condition,
    Kind,
    Mechanism,
    RunState,
    Stop,
    StopOn,
    StopReason,
    Watchpoint,
)
from kvmbench.engine.patches import PatchTable
from kvmbench.engine.planner import plan_breakpoint, plan_watchpoint
from kvmbench.engine.requests import Breakpoints, RequestNumbers, Watchpoints
from kvmbench.engine.slots import SlotTable
from kvmbench.engine.views import Memory, Registers
from kvmbench.errors import (
    BreakpointError,
    ConditionError,
    GuestError,
    GuestMemoryError,
    KvmbenchError,
    SessionStateError,
    SlotsExhausted,
    UsageError,
)
from kvmbench.symbols.table import SymbolTable

_TRAP_OPCODE = {Mechanism.INT3: 0xCC, Mechanism.HLT_TRAP: 0xF4}
_PUSH_R64 = range(0x50, 0x58)
_GPR_BY_CODE = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")
_REX_B = 0x41
_MASK64 = (1 << 64) - 1
_DR6_SLOTS = Dr6.B0 | Dr6.B1 | Dr6.B2 | Dr6.B3
_DR6_BS = int(Dr6.BS)  # a plain int: IntFlag arithmetic costs a microsecond a step


@dataclass
class _Internal:
    """A breakpoint run control sets for itself (finish, until, nexti)."""

    breakpoint: Breakpoint
    reason: StopReason
    #: True when the hit is in the frame run control waits for.
    in_frame: Callable[[], bool]


class Session:
    """A live guest under the debugger. Create with :func:`kvmbench.open`."""

    def __init__(
        self,
        machine: Machine,
        symbols: SymbolTable | Callable[[], SymbolTable],
        capabilities: HostCapabilities,
        image: Path,
    ) -> None:
        self.machine = machine
        # A loader is called on first use: parsing DWARF costs more than
        # booting the guest, and running needs no symbols.
        self._symbols = symbols
        self.capabilities = capabilities
        self.image = image
        self.hits = HitLog()
        self.breakpoints = Breakpoints(self)
        self.watchpoints = Watchpoints(self)
        self.state = RunState.STOPPED
        self.last_stop: Stop | None = None
        #: Stop at traps the guest raises itself instead of handing them over.
        self.catch_guest_traps = False
        #: (watch, physical start, end) of page-trap watches, for the store path.
        self._page_watch_ranges: list[tuple[Watchpoint, int, int]] = []
        self._watch_pieces: dict[int, list[tuple[int, int]]] = {}
        #: Bumped whenever what is armed changes; keys the cached debug setup.
        self._armed_generation = 0
        self._debug_key: tuple[object, ...] | None = None
        self._debug_config: tuple[int, tuple[int, ...], bool] = (0, (0,) * 8, False)
        self._numbers = RequestNumbers()
        self._patches = PatchTable(machine.memory)
        self._slots = SlotTable(X86_64)
        self._conditions: dict[int, CompiledCondition | None] = {}
        #: Enabled breakpoints by address (internal ones included).
        self._armed: dict[int, list[Breakpoint]] = {}
        self._internal: dict[int, _Internal] = {}
        self._next_internal = -1
        self._lock = threading.Lock()
        self._decoded: dict[tuple[int, bytes], instructions.Instruction] = {}
        self.regs = Registers(machine, self._require_stopped)
        self.mem = Memory(machine, self._patches, self._require_stopped)
        # The engine's own view, used while the guest is formally running.
        self._mem = Memory(machine, self._patches, lambda: None)

    # --- state -----------------------------------------------------------------

    def _require_stopped(self) -> None:
        if self.state is RunState.RUNNING:
            raise SessionStateError("the guest is running; pause it first")
        if self.state is not RunState.STOPPED:
            raise SessionStateError(f"the guest has {self.state.value}; boot it again")

    @property
    def symbols(self) -> SymbolTable:
        """The guest image's symbols (ELF, DWARF), loaded on first use."""
        if not isinstance(self._symbols, SymbolTable):
            self._symbols = self._symbols()
        return self._symbols

    @property
    def console(self) -> str:
        """Everything the guest printed."""
        return self.machine.console.text

    @property
    def pc(self) -> int:
        return self.regs.rip

    def close(self) -> None:
        """Restore patched code, free the guest and every fd. Idempotent."""
        if self.state is RunState.RUNNING:
            raise SessionStateError("pause the guest before closing the session")
        if self.machine.vcpu.fd >= 0:
            self._patches.remove_all()
            self.machine.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- breakpoints -------------------------------------------------------------

    def _resolve(self, location: str | int) -> tuple[str, int]:
        if isinstance(location, int):
            return f"{location:#x}", location
        text = location.strip()
        if not text:
            raise UsageError("empty location")
        return text, self.symbols.resolve(text)

    def _check_code_address(self, address: int, kind: Kind = Kind.AUTO) -> None:
        """Refuse code addresses no mechanism can serve. A hardware slot
        matches linear addresses, so ``hw`` may wait on a page that is not
        mapped yet (code a kernel loads later); a software trap cannot."""
        try:
            physical = self.machine.translate(address)
        except GuestMemoryError as e:
            if kind is Kind.HW:
                return
            raise BreakpointError(
                f"cannot break at {address:#x}: {e} (a hardware breakpoint can wait for it: hbreak)"
            ) from None
        if not self.machine.memory.contains(physical):
            raise BreakpointError(f"cannot break at {address:#x}: outside guest memory")

    def _add_breakpoint(
        self,
        location: str | int,
        kind: Kind,
        condition: Condition,
        ignore_count: int,
        temporary: bool,
        tracepoint: bool,
        enabled: bool,
        mechanism: Mechanism | None = None,
    ) -> Breakpoint:
        self._require_stopped()
        text, address = self._resolve(location)
        self._check_code_address(address, kind)
        if ignore_count < 0:
            raise UsageError("ignore count must not be negative")
        compiled = CompiledCondition(condition) if condition is not None else None
        bp = Breakpoint(
            number=self._numbers.next_number,
            location=text,
            address=address,
            kind=kind,
            condition=condition,
            ignore_count=ignore_count,
            temporary=temporary,
            tracepoint=tracepoint,
            enabled=enabled,
            requested=mechanism,
        )
        if enabled:
            self._serve(bp)
        self._numbers.take()
        self._conditions[bp.number] = compiled
        self.breakpoints._by_number[bp.number] = bp
        return bp

    def _serve(self, bp: Breakpoint) -> None:
        """Give ``bp`` a mechanism and arm it; raises if none can serve."""
        self._armed_generation += 1
        plan = plan_breakpoint(bp.kind, self.capabilities, bp.requested)
        failure: KvmbenchError | None = None
        for mechanism, reason in plan.choices:
            try:
                if mechanism is Mechanism.HW_EXECUTE:
                    bp.slot = self._slots.allocate(bp, SlotKind.EXECUTE, bp.address).slot
                else:
                    self._patches.insert(self.machine.translate(bp.address), _TRAP_OPCODE[mechanism])
                    self._update_readonly_pages()
                    bp.slot = None
            except (SlotsExhausted, GuestMemoryError) as e:
                failure = e
                continue
            bp.mechanism, bp.reason = mechanism, reason
            self._armed.setdefault(bp.address, []).append(bp)
            return
        assert failure is not None
        raise failure

    def _unserve(self, bp: Breakpoint) -> None:
        self._armed_generation += 1
        if bp.mechanism is None:
            return
        if bp.mechanism is Mechanism.HW_EXECUTE:
            self._slots.release(bp)
        else:
            self._patches.remove(self.machine.translate(bp.address))
            self._update_readonly_pages()
        users = self._armed.get(bp.address, [])
        if bp in users:
            users.remove(bp)
        if not users:
            self._armed.pop(bp.address, None)
        bp.mechanism, bp.slot, bp.reason = None, None, ""
        self._replan()

    def _replan(self) -> None:
        """Move requests to better mechanisms when slots free up."""
        for wp in self.watchpoints:
            if (wp.enabled and wp.kind is Kind.AUTO and wp.requested is None
                    and wp.mechanism is not Mechanism.HW_DATA):
                plan = plan_watchpoint(wp.kind, wp.access, self.capabilities)
                needed = len(self._slots.profile.split(wp.address, wp.length))
                if (plan.choices[0][0] is Mechanism.HW_DATA
                        and self._slots.free_count(_slot_kind(wp.access)) >= needed):
                    self._unserve_watch(wp)
                    self._serve_watch(wp)

    def _delete_breakpoint(self, bp: Breakpoint) -> None:
        self._require_stopped()
        self._unserve(bp)
        self.breakpoints._by_number.pop(bp.number, None)
        self._conditions.pop(bp.number, None)
        self.hits.forget(bp.number)

    def _set_enabled(self, bp: Breakpoint, enabled: bool) -> None:
        self._require_stopped()
        if enabled and not bp.enabled:
            self._serve(bp)
        elif not enabled and bp.enabled:
            self._unserve(bp)
        bp.enabled = enabled

    def slot_usage(self) -> tuple[int, int, list[tuple[str, str]]]:
        """(used, total, [(slot, holder)]) of the hardware debug slots."""
        holders = [(h.slot, str(h.owner)) for h in self._slots.holders()]
        return self._slots.used, self._slots.total, holders

    # --- watchpoints ---------------------------------------------------------

    def _add_watchpoint(
        self,
        location: str | int,
        length: int | None,
        access: Access,
        kind: Kind,
        condition: Condition,
        ignore_count: int,
        tracepoint: bool,
        mechanism: Mechanism | None = None,
        stop_on: StopOn = StopOn.CHANGE,
    ) -> Watchpoint:
        self._require_stopped()
        text, address = self._resolve(location)
        if length is None:
            symbol = self.symbols.get_by_name(text) if isinstance(location, str) else None
            length = symbol.size if symbol is not None and symbol.size else 8
        if length <= 0:
            raise UsageError(f"watch length must be positive, not {length}")
        for offset in range(0, length, 4096):
            self._check_data_range(address + offset, min(4096, length - offset))
        self._check_data_range(address + length - 1, 1)
        compiled = CompiledCondition(condition) if condition is not None else None
        wp = Watchpoint(
            number=self._numbers.next_number,
            location=text,
            address=address,
            length=length,
            access=access,
            kind=kind,
            condition=condition,
            ignore_count=ignore_count,
            tracepoint=tracepoint,
            requested=mechanism,
            stop_on=stop_on,
        )
        wp.value = self.mem.read(address, length)
        # Registered before serving: a page trap protects the pages of every
        # registered page-trap watch.
        self.watchpoints._by_number[wp.number] = wp
        try:
            self._serve_watch(wp)
        except BaseException:
            del self.watchpoints._by_number[wp.number]
            raise
        self._numbers.take()
        self._conditions[wp.number] = compiled
        return wp

    def _check_data_range(self, address: int, length: int) -> None:
        try:
            physical = self.machine.translate(address)
        except GuestMemoryError as e:
            raise BreakpointError(f"cannot watch {address:#x}: {e}") from None
        if not self.machine.memory.contains(physical, length):
            raise BreakpointError(f"cannot watch {address:#x}+{length}: outside guest memory")

    def _serve_watch(self, wp: Watchpoint) -> None:
        self._armed_generation += 1
        plan = plan_watchpoint(wp.kind, wp.access, self.capabilities, wp.requested)
        failure: KvmbenchError | None = None
        for mechanism, reason in plan.choices:
            if mechanism is Mechanism.HW_DATA:
                try:
                    taken = self._slots.allocate_range(wp, _slot_kind(wp.access), wp.address, wp.length)
                except SlotsExhausted as e:
                    failure = e
                    continue
                wp.slots = tuple(a.slot for a in taken)
            wp.mechanism, wp.reason = mechanism, reason
            if mechanism is Mechanism.PAGE_TRAP:
                self._update_readonly_pages()
            return
        assert failure is not None
        raise failure

    def _unserve_watch(self, wp: Watchpoint) -> None:
        self._armed_generation += 1
        if wp.mechanism is Mechanism.HW_DATA:
            self._slots.release(wp)
        mechanism = wp.mechanism
        wp.mechanism, wp.slots, wp.reason = None, (), ""
        if mechanism is Mechanism.PAGE_TRAP:
            self._update_readonly_pages()

    def _delete_watchpoint(self, wp: Watchpoint) -> None:
        self._require_stopped()
        self._unserve_watch(wp)
        self.watchpoints._by_number.pop(wp.number, None)
        self._conditions.pop(wp.number, None)
        self.hits.forget(wp.number)
        self._replan()

    def _page_trap_watches(self) -> list[Watchpoint]:
        return [w for w in self.watchpoints._by_number.values()
                if w.enabled and w.mechanism is Mechanism.PAGE_TRAP]

    def _update_readonly_pages(self) -> None:
        """Protect the pages of page-trap watches and of software traps, and
        note each watch's physical ranges for the store path."""
        pages: set[int] = set()
        ranges: list[tuple[Watchpoint, int, int]] = []
        self._watch_pieces = {}
        for wp in self._page_trap_watches():
            pieces = self._watch_pieces[wp.number] = self._physical_pieces(wp.address, wp.length)
            for start, end in pieces:
                ranges.append((wp, start, end))
                pages.update(range(start >> 12, ((end - 1) >> 12) + 1))
        self._page_watch_ranges = ranges
        # Pages holding software traps are protected too, so a guest store
        # over a trap becomes the new original instead of erasing the trap.
        pages |= self._patches.pages()
        self.machine.memory.set_readonly_pages(pages)

    def _physical_pieces(self, address: int, length: int) -> list[tuple[int, int]]:
        """[start, end) physical ranges of a virtual range, split at pages."""
        pieces: list[tuple[int, int]] = []
        offset = 0
        while offset < length:
            here = address + offset
            n = min(length - offset, 4096 - (here & 0xFFF))
            start = self.machine.translate(here)
            if pieces and pieces[-1][1] == start:
                pieces[-1] = (pieces[-1][0], start + n)
            else:
                pieces.append((start, start + n))
            offset += n
        return pieces

    # --- run control -------------------------------------------------------------

    def pause(self) -> None:
        """Stop a running guest (from any thread); the running call returns a
        ``paused`` stop. Does nothing when the guest is not running."""
        with self._lock:
            if self.state is RunState.RUNNING:
                self.machine.request_pause()

    def cont(self) -> Stop:
        """Run until a breakpoint, watchpoint, pause, exit or crash."""
        return self._run(self._continue)

    def stepi(self, count: int = 1) -> Stop:
        """Execute ``count`` instructions (stepping into calls)."""
        if count < 1:
            raise UsageError("step count must be at least 1")

        return self._run(lambda: self._step_many(count))

    def nexti(self, count: int = 1) -> Stop:
        """Execute ``count`` instructions, running called functions to their return."""
        if count < 1:
            raise UsageError("step count must be at least 1")

        def steps() -> Stop:
            stop = Stop(StopReason.STEP, self.machine.regs.rip)
            for _ in range(count):
                stop = self._next_instruction()
                if stop.reason is not StopReason.STEP:
                    break
            return stop

        return self._run(steps)

    def finish(self) -> Stop:
        """Run until the current function returns to its caller; the stop
        carries the return value (rax)."""

        def to_return() -> Stop:
            return_address, frame_top = self._frame_return()
            stop = self._run_to(return_address, StopReason.FINISH,
                                lambda: self.machine.regs.rsp >= frame_top)
            if stop.reason is StopReason.FINISH:
                stop = Stop(StopReason.FINISH, stop.pc, return_value=self.machine.regs.rax)
            return stop

        return self._run(to_return)

    def advance(self, location: str | int) -> Stop:
        """Run until ``location`` is reached (in any frame) or the current
        function returns, as gdb's ``advance``."""
        return self._run(lambda: self._run_to_location(location, same_frame=False))

    def until(self, location: str | int | None = None) -> Stop:
        """gdb's ``until``: with a location, run until it is reached in the
        current frame or the frame returns; without, step over the current
        instruction but do not stop in a loop that jumps backwards."""
        if location is not None:
            return self._run(lambda: self._run_to_location(location, same_frame=True))
        return self._run(self._until_next)

    def _run(self, body: Callable[[], Stop]) -> Stop:
        """Run ``body`` with the guest marked running; every stop goes through here."""
        self._require_stopped()
        with self._lock:
            self.state = RunState.RUNNING
        # Translations are cached while the guest runs (a hit costs no page
        # walk); the user may have edited page tables since the last stop.
        self.machine.flush_tlb()
        try:
            stop = body()
        except GuestError as e:
            stop = Stop(StopReason.CRASHED, e.rip, detail=str(e))
        except BaseException:
            self.state = RunState.STOPPED
            raise
        finally:
            self.machine.hold_interrupts = False
        with self._lock:
            if stop.reason is StopReason.EXITED:
                self.state = RunState.EXITED
            elif stop.reason is StopReason.CRASHED:
                self.state = RunState.CRASHED
            else:
                self.state = RunState.STOPPED
        self.machine.console.flush()
        self.machine.flush_tlb()  # the guest may have changed its page tables
        if stop.breakpoint is not None:
            bp = self.breakpoints.get(stop.breakpoint)
            if bp is not None and bp.temporary:
                self._delete_breakpoint(bp)
        self.last_stop = stop
        return stop

    # The loop every run-control command is built on.

    def _continue(self) -> Stop:
        machine = self.machine
        if self._caught_int3 is not None:
            # Resuming from a caught guest int3 hands it to the guest's handler.
            (pc, trapped), self._caught_int3 = self._caught_int3, None
            if machine.regs.rip == pc and self._mem.read(pc, 1) == b"\xcc":
                machine.deliver_breakpoint(pc, trapped=trapped)
        stop = self._step_off_trap()
        if stop is not None:
            return stop
        self._apply_debug(stepping=False)
        armed = self._armed
        applied = self._armed_generation
        while True:
            stop = self._on_event(self._run_guest())
            if stop is not None:
                return stop
            if machine.regs.rip in armed:
                stop = self._step_off_trap()
                if stop is not None:
                    return stop
                applied = -1  # stepping off may have left the step setup in place
            if applied != self._armed_generation:
                self._apply_debug(stepping=False)
                applied = self._armed_generation

    def _run_to(self, address: int, reason: StopReason, in_frame: Callable[[], bool]) -> Stop:
        """Continue with an internal breakpoint at ``address``."""
        bp = Breakpoint(number=self._next_internal, location=f"{address:#x}", address=address,
                        internal=True)
        self._next_internal -= 1
        self._serve(bp)
        self._internal[bp.number] = _Internal(bp, reason, in_frame)
        try:
            return self._continue()
        finally:
            del self._internal[bp.number]
            self._unserve(bp)

    def _run_to_location(self, location: str | int, same_frame: bool) -> Stop:
        _, address = self._resolve(location)
        self._check_code_address(address)
        return_address, frame_top = self._frame_return()
        rsp = self.machine.regs.rsp
        target = Breakpoint(number=self._next_internal, location=str(location), address=address,
                            internal=True)
        self._next_internal -= 1
        back = Breakpoint(number=self._next_internal, location=f"{return_address:#x}",
                          address=return_address, internal=True)
        self._next_internal -= 1
        in_frame: Callable[[], bool] = (
            (lambda: self.machine.regs.rsp >= rsp) if same_frame else (lambda: True)
        )
        pairs = [(target, _Internal(target, StopReason.LOCATION, in_frame)),
                 (back, _Internal(back, StopReason.FINISH,
                                  lambda: self.machine.regs.rsp >= frame_top))]
        for bp, internal in pairs:
            self._serve(bp)
            self._internal[bp.number] = internal
        try:
            return self._continue()
        finally:
            for bp, _ in pairs:
                del self._internal[bp.number]
                self._unserve(bp)

    def _next_instruction(self) -> Stop:
        insn = self._current_instruction()
        if insn.is_call:
            rsp = self.machine.regs.rsp
            stop = self._run_to(insn.next_address, StopReason.STEP,
                                lambda: self.machine.regs.rsp >= rsp)
            return stop
        return self._single_step()

    def _until_next(self) -> Stop:
        insn = self._current_instruction()
        target = insn.branch_target
        if insn.is_jump and target is not None and target <= insn.address:
            rsp = self.machine.regs.rsp
            return self._run_to(insn.next_address, StopReason.STEP,
                                lambda: self.machine.regs.rsp >= rsp)
        return self._next_instruction()

    def _current_instruction(self) -> instructions.Instruction:
        pc = self.machine.regs.rip
        return instructions.decode(self._mem.read(pc, 16), pc)

    def _frame_return(self) -> tuple[int, int]:
        """(return address, the caller's rsp after return) of the current frame."""
        regs = self.machine.regs
        return_address, caller_rsp, _ = self._caller_of(regs.rip, regs.rsp, regs.rbp)
        return return_address, caller_rsp

    def _caller_of(self, pc: int, rsp: int, rbp: int) -> tuple[int, int, int]:
        """(return address, caller's rsp after return, caller's rbp) of the
        frame executing at ``pc`` with these rsp and rbp.

        Frame pointers (System V): at a function's first instruction the
        return address is at rsp and rbp is still the caller's; after
        ``push rbp`` it is at rsp+8; once ``mov rbp, rsp`` ran, at rbp+8 with
        the caller's rbp at [rbp]. Breakpoints sit on first instructions, so
        a plain rbp walk would skip the immediate caller there.
        """
        symbol = self.symbols.get_containing(pc)
        offset = pc - symbol.address if symbol is not None else None
        if offset == 0:
            slot, caller_rbp = rsp, rbp
        elif offset is not None and offset < 4 and self._mem.read(symbol.address, 1) == b"\x55":  # type: ignore[union-attr]
            slot, caller_rbp = rsp + 8, rbp  # after push rbp, at or before mov rbp,rsp
        else:
            slot, caller_rbp = rbp + 8, self._mem.read_u64(rbp)
        return self._mem.read_u64(slot), slot + 8, caller_rbp

    def backtrace(self, limit: int = 64) -> list[int]:
        """The pcs of the guest's call chain, innermost first (frame pointers;
        stops at the first frame that does not look like one)."""
        self._require_stopped()
        regs = self.machine.regs
        pc, rsp, rbp = regs.rip, regs.rsp, regs.rbp
        pcs = [pc]
        while len(pcs) < limit:
            try:
                pc, caller_rsp, rbp = self._caller_of(pc, rsp, rbp)
            except GuestMemoryError:
                break
            # A return address points into known code, and callers' frames
            # lie above (the stack grows down): anything else ends the walk.
            if pc == 0 or caller_rsp <= rsp or self.symbols.get_containing(pc) is None:
                break
            pcs.append(pc)
            rsp = caller_rsp
        return pcs

    # Stepping.

    def _single_step(self) -> Stop:
        """One instruction with interrupts held off; traps at pc are stepped over."""
        machine = self.machine
        pc = machine.regs.rip
        patch = self._patches.get(machine.translate(pc))
        if patch is not None:
            self._patches.lift(patch.address)
        machine.hold_interrupts = True
        try:
            self._set_resume_flag()
            self._apply_debug(stepping=True, off_at=pc)
            while True:
                event = self._run_guest()
                if isinstance(event, Debug) and event.dr6 & Dr6.BS:
                    stop = self._watch_hits_in_step(event)
                    return stop or Stop(StopReason.STEP, machine.regs.rip,
                                        extra={"dr6": event.dr6})
                if isinstance(event, Hlt):
                    # The guest's own hlt was the stepped instruction.
                    return Stop(StopReason.STEP, machine.regs.rip)
                stop = self._on_event(event, stepping=True)
                if stop is not None:
                    return stop
        finally:
            if patch is not None:
                self._patches.rearm(patch.address)
            machine.hold_interrupts = False

    def _step_many(self, count: int) -> Stop:
        """``count`` single-steps. Between addresses where a request is armed
        the machine steps on its own (one KVM_RUN a step); at those addresses
        and with compare-watches each step goes through :meth:`_single_step`."""
        machine = self.machine
        armed = self._armed
        done = 0
        dr6 = 0
        stop: Stop | None = None
        try:
            while done < count:
                if machine.regs.rip in armed or self._stepping_watches():
                    stop = self._single_step()  # lifts traps, masks slots, compares
                    done += 1
                    if stop.reason is not StopReason.STEP:
                        break
                    dr6 = int(stop.extra.get("dr6", 0))  # type: ignore[call-overload]
                    stop = None
                    continue
                machine.hold_interrupts = True
                self._apply_debug(stepping=True)
                stepped, event = machine.step(count - done, armed)
                done += stepped
                if stepped:
                    dr6 = machine.last_step_dr6
                if event is None:
                    continue
                if type(event) is Hlt:
                    done += 1  # the guest's own hlt was the stepped instruction
                    continue
                stop = self._on_event(event, stepping=True)
                if stop is not None and stop.reason is not StopReason.STEP:
                    break
                stop = None
        finally:
            machine.hold_interrupts = False
        if stop is None:
            stop = Stop(StopReason.STEP, machine.regs.rip, extra={"dr6": dr6})
        stop.extra["steps"] = done
        return stop

    def _step_off_trap(self) -> Stop | None:
        """Before resuming at one of our breakpoints, run the instruction it
        covers: emulate a displaced push, else set RF where the host honours
        it for a hardware slot, else single-step it with the trap lifted."""
        pc = self.machine.regs.rip
        users = self._armed.get(pc)
        if not users or all(b.mechanism is None for b in users):
            return None
        if self._emulate_push(pc):
            return None
        hardware_only = all(b.mechanism is Mechanism.HW_EXECUTE for b in users)
        if hardware_only and self.capabilities.works(Feature.RESUME_FLAG):
            self._set_resume_flag()
            return None
        stop = self._single_step()
        return None if stop.reason is StopReason.STEP else stop

    def _emulate_push(self, pc: int) -> bool:
        """Execute a ``push r64`` at a breakpoint in the VMM (no single-step).

        Function entries start with ``push rbp`` at -O0 and in most kernels;
        emulating it makes a breakpoint hit cost one KVM_RUN, not three. Not
        done when a watchpoint covers the stack slot: the CPU must store it.
        """
        code = self._mem.read(pc, 2)
        regs = self.machine.regs
        if code[0] == _REX_B and code[1] in _PUSH_R64:
            name, length = f"r{8 + code[1] - 0x50}", 2
        elif code[0] in _PUSH_R64:
            name, length = _GPR_BY_CODE[code[0] - 0x50], 1
        else:
            return False
        rsp = (regs.rsp - 8) & _MASK64
        if any(w.enabled and w.address < rsp + 8 and rsp < w.address + w.length
               for w in self.watchpoints._by_number.values()):
            return False
        try:
            self._store_as_guest(rsp, getattr(regs, name).to_bytes(8, "little"))
        except GuestMemoryError:
            return False  # let the CPU raise the fault
        regs.rsp = rsp
        regs.rip = pc + length
        self.machine.mark_regs_dirty()
        return True

    def _store_as_guest(self, address: int, data: bytes) -> None:
        """A store the VMM performs for the guest: watched bytes see it too."""
        physical = self.machine.translate(address)
        if not self.machine.memory.contains(physical, len(data)):
            raise GuestMemoryError(f"{address:#x} is outside guest memory")
        self._patches.write(physical, data)

    def _set_resume_flag(self) -> None:
        # RF suppresses an execute breakpoint at the resume address for one
        # instruction (SDM vol. 3, 18.3.1.1): continuing from a DRn hit.
        regs = self.machine.regs
        if self._slots.used and not regs.rflags & Rflags.RF:
            regs.rflags |= Rflags.RF
            self.machine.mark_regs_dirty()

    def _apply_debug(self, stepping: bool, off_at: int | None = None) -> None:
        """Program KVM_SET_GUEST_DEBUG for what is armed. ``off_at``: an address
        whose execute slots are left out for one step, on hosts where RF does
        not keep them from firing again.

        Called before every resume, so the configuration is computed once per
        change of what is armed (the machine skips an unchanged ioctl)."""
        if off_at is not None and self.capabilities.works(Feature.RESUME_FLAG):
            off_at = None
        key = (self._armed_generation, stepping, off_at, self.catch_guest_traps)
        if key != self._debug_key:
            self._debug_key = key
            self._debug_config = self._debug_configuration(stepping, off_at)
        control, debugregs, hold = self._debug_config
        if hold:
            self.machine.hold_interrupts = True
        self.machine.set_guest_debug(control, debugregs)

    def _debug_configuration(
        self, stepping: bool, off_at: int | None
    ) -> tuple[int, tuple[int, ...], bool]:
        """(control flags, debugregs, hold interrupts) for what is armed now."""
        control = 0
        debugregs: tuple[int, ...] = (0,) * 8
        if self._slots.used:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP
            debugregs = tuple(self._slots.debugregs())
            if off_at is not None:
                debugregs = _without_execute_slots_at(debugregs, self._slots, off_at)
        if self.catch_guest_traps or any(
            b.mechanism is Mechanism.INT3 for bps in self._armed.values() for b in bps
        ):
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_SW_BP
        hold = bool(stepping or self._stepping_watches())
        if hold:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP
            if self.capabilities.works(Feature.BLOCKIRQ):
                control |= abi.KVM_GUESTDBG_BLOCKIRQ
        return control, debugregs, hold

    def _run_guest(self) -> MachineEvent:
        """One machine run. With single-step-compare watches armed, first
        decode the instruction about to execute: its memory operands say
        what the step reads and writes (a value compare alone misses reads
        and stores of an unchanged value)."""
        if self._stepping_watches():
            regs = self.machine.regs
            self._step_pc = regs.rip
            try:
                insn = self._decode_cached(regs.rip)
                self._step_accesses = instructions.memory_accesses(insn, _DecodeRegisters(self.machine))
            except (KvmbenchError, KeyError):
                self._step_accesses = None  # fall back to comparing values
        return self.machine.run()

    def _decode_cached(self, pc: int) -> instructions.Instruction:
        """Decode at ``pc``, memoised on the bytes (code the guest rewrites
        decodes afresh): capstone costs more than a KVM_RUN per step."""
        code = self._mem.read(pc, instructions.MAX_INSTRUCTION_LENGTH)
        key = (pc, code)
        insn = self._decoded.get(key)
        if insn is None:
            if len(self._decoded) >= 4096:
                self._decoded.clear()
            insn = self._decoded[key] = instructions.decode(code, pc)
        return insn

    def _stepping_watches(self) -> list[Watchpoint]:
        """Enabled single-step-compare watches (asked before every run, so
        kept per change of what is armed)."""
        if self._step_watches_generation != self._armed_generation:
            self._step_watches = [w for w in self.watchpoints._by_number.values()
                                  if w.enabled and w.mechanism is Mechanism.STEP_COMPARE]
            self._step_watches_generation = self._armed_generation
        return self._step_watches

    _step_watches: list[Watchpoint] = []
    _step_watches_generation = -1

    # --- events ------------------------------------------------------------------

    def _on_event(self, event: MachineEvent, stepping: bool = False) -> Stop | None:
        """Turn a machine event into a stop, or None to keep running."""
        machine = self.machine
        if isinstance(event, Debug):
            if event.exception == 3:
                return self._on_int3(event.pc, trapped=True)
            return self._on_debug(event, stepping)
        if isinstance(event, Hlt):
            return self._on_hlt()
        if isinstance(event, Mmio):
            return self._on_store(event)
        if isinstance(event, Int3Undelivered):
            return self._on_int3(event.pc, trapped=False)
        if isinstance(event, Paused):
            return Stop(StopReason.PAUSED, machine.regs.rip)
        if isinstance(event, GuestExited):
            return Stop(StopReason.EXITED, None, exit_code=event.code)
        raise AssertionError(f"unhandled machine event {event}")

    def _on_debug(self, event: Debug, stepping: bool) -> Stop | None:
        dr6 = event.dr6
        if dr6 & _DR6_SLOTS:
            for assignment in self._slots.assignments():
                if dr6 & (1 << assignment.index):
                    owner = assignment.owner
                    if isinstance(owner, Breakpoint):
                        return self._on_breakpoint(event.pc, Mechanism.HW_EXECUTE)
                    if isinstance(owner, Watchpoint):
                        return self._on_hw_watch(owner)
        if dr6 & Dr6.BS and self._stepping_watches():
            return self._watch_hits_in_step(event)
        return self._guest_trap(1, event.pc)

    def _on_int3(self, pc: int, trapped: bool) -> Stop | None:
        """An int3 at ``pc``: ours (a breakpoint), or the guest's own, which
        is handed to its handler unless the user catches guest traps.
        ``trapped``: KVM reported a #BP exit, rather than failing to run it."""
        users = self._armed.get(pc)
        if users and any(b.mechanism is Mechanism.INT3 for b in users):
            return self._on_breakpoint(pc, Mechanism.INT3)
        if self.catch_guest_traps and (self._caught_int3 is None or self._caught_int3[0] != pc):
            # Stopped before the int3 ran; resuming delivers it (see _continue).
            self._caught_int3 = (pc, trapped)
            return Stop(StopReason.GUEST_TRAP, pc, detail="guest executed int3 (#BP)")
        self._caught_int3 = None
        self.machine.deliver_breakpoint(pc, trapped=trapped)
        return None

    #: A caught guest int3 not yet delivered: (pc, reported as a #BP exit).
    _caught_int3: tuple[int, bool] | None = None

    def _on_hlt(self) -> Stop | None:
        regs = self.machine.regs
        pc = regs.rip - 1
        users = self._armed.get(pc)
        if users and any(b.mechanism is Mechanism.HLT_TRAP for b in users):
            regs.rip = pc
            self.machine.mark_regs_dirty()
            return self._on_breakpoint(pc, Mechanism.HLT_TRAP)
        # The guest's own hlt: it waits for an interrupt, which only the timer
        # can bring, and only with interrupts enabled (a pause also ends it).
        if self.machine.timer_running and regs.rflags & Rflags.IF:
            self.machine.halt()
            return None
        return Stop(StopReason.GUEST_TRAP, regs.rip,
                    detail="guest halted with no interrupt to wake it (hlt)")

    def _guest_trap(self, vector: int, pc: int) -> Stop | None:
        if self.catch_guest_traps:
            return Stop(StopReason.GUEST_TRAP, pc, detail=f"guest debug exception {vector}")
        self.machine.inject_exception(vector)
        return None

    def _on_breakpoint(self, pc: int, mechanism: Mechanism) -> Stop | None:
        """A trap of ours fired at ``pc``: count, evaluate, decide whether to stop."""
        stop_for: Breakpoint | None = None
        internal_stop: Stop | None = None
        for bp in list(self._armed.get(pc, ())):
            if bp.internal:
                internal = self._internal.get(bp.number)
                if internal is not None and internal.in_frame():
                    internal_stop = Stop(internal.reason, pc, mechanism=mechanism)
                continue
            try:
                if not self._condition_holds(bp.number):
                    continue
            except ConditionError as e:
                return Stop(StopReason.BREAKPOINT, pc, breakpoint=bp.number,
                            mechanism=mechanism, detail=str(e))
            bp.hit_count += 1
            self.hits.record(bp.number, pc, self._return_address())
            if bp.ignore_count > 0:
                bp.ignore_count -= 1
                continue
            if not bp.tracepoint and stop_for is None:
                stop_for = bp
        if stop_for is not None:
            return Stop(StopReason.BREAKPOINT, pc, breakpoint=stop_for.number, mechanism=mechanism)
        return internal_stop

    def _return_address(self) -> int:
        """The caller of a function whose first instruction is executing."""
        try:
            regs = self.machine.regs
            return self.machine.memory.read_u64(self.machine.translate(regs.rsp))
        except GuestMemoryError:
            return 0

    def _condition_holds(self, number: int) -> bool:
        condition = self._conditions.get(number)
        if condition is None:
            return True
        return condition.evaluate(self, ConditionNames(self))

    # Watch hits.

    def _on_store(self, event: Mmio) -> Stop | None:
        """A guest store to a read-only page: complete it, then check watches."""
        if not event.is_write:
            raise GuestError(f"guest read of unbacked memory at {event.address:#x}",
                             self.machine.regs.rip)
        address = event.address
        self._patches.write(address, event.data)
        writer = self.machine.regs.rip  # the store has not retired: rip is the writer
        end = address + event.length
        stop = None
        seen: set[int] = set()
        for wp, start, stop_at in self._page_watch_ranges:
            if start < end and address < stop_at and wp.number not in seen:
                seen.add(wp.number)
                stop = self._watch_changed(wp, writer, address) or stop
        return stop

    def _on_hw_watch(self, wp: Watchpoint) -> Stop | None:
        # A data breakpoint is a trap: rip is after the access, so the writer
        # is the instruction before it, which we cannot know; report rip.
        return self._watch_changed(wp, self.machine.regs.rip, wp.address, after=True)

    def _watch_hits_in_step(self, event: Debug) -> Stop | None:
        """Single-step compare: did the instruction just stepped read or write
        a watched range (decoded operands), or change its value?"""
        stop = None
        accesses = self._step_accesses
        for wp in self._stepping_watches():
            read = wrote = False
            where = wp.address
            for a in accesses or ():
                if a.address < wp.address + wp.length and wp.address < a.address + a.size:
                    read |= a.access.reads
                    wrote |= a.access.writes
                    where = a.address
            if wp.access is Access.READ:
                hit = read
            elif wp.access is Access.WRITE:
                hit = wrote or None  # None: report only if the value changed
            else:
                hit = read or wrote or None
            stop = self._watch_changed(wp, self._step_pc, where, hit=hit) or stop
        return stop

    _step_pc = 0
    _step_accesses: list[instructions.MemoryAccess] | None = None

    def _watch_changed(self, wp: Watchpoint, writer: int, access_address: int,
                       after: bool = True, hit: bool | None = None) -> Stop | None:
        """Report a watch hit. ``hit``: True/False when the mechanism knows
        whether the watched bytes were accessed; None to decide by value."""
        new = self._read_watched(wp)
        old = wp.value
        if hit is None:
            if wp.mechanism is Mechanism.PAGE_TRAP:
                hit = True  # every store to the watched bytes
            elif wp.mechanism is Mechanism.HW_DATA:
                # x86 has no read-only slots: a read watch is an access watch
                # that ignores accesses which changed the value (gdb does so).
                hit = new == old if wp.access is Access.READ else True
            else:
                hit = new != old
        if not hit:
            wp.value = new
            return None
        try:
            if not self._condition_holds(wp.number):
                wp.value = new
                return None
        except ConditionError as e:
            wp.value = new
            return Stop(StopReason.WATCHPOINT, self.machine.regs.rip, watchpoint=wp.number,
                        mechanism=wp.mechanism, detail=str(e), writer=writer)
        wp.value = new
        wp.last_writer = writer
        wp.hit_count += 1
        self.hits.record(wp.number, writer, writer)
        if wp.tracepoint:
            return None
        # Every store counts; a write watch stops only when the value
        # changed, as gdb's `watch` does, unless asked to stop at every store.
        if wp.access is Access.WRITE and wp.stop_on is StopOn.CHANGE and new == old:
            return None
        if wp.ignore_count > 0:
            wp.ignore_count -= 1
            return None
        # pc is where the guest stands (past the access, except for a page
        # trap, whose store has not retired); writer is who made the access.
        return Stop(StopReason.WATCHPOINT, self.machine.regs.rip, watchpoint=wp.number,
                    mechanism=wp.mechanism, old_value=int.from_bytes(old, "little"),
                    new_value=int.from_bytes(new, "little"), access_address=access_address,
                    writer=writer)

    def _read_watched(self, wp: Watchpoint) -> bytes:
        # A page trap pins its watch's physical pages, so their ranges are
        # known; other mechanisms translate (cached while running).
        pieces = self._watch_pieces.get(wp.number) if wp.mechanism is Mechanism.PAGE_TRAP else None
        if pieces is None:
            pieces = self._physical_pieces(wp.address, wp.length)
        if len(pieces) == 1:
            start, end = pieces[0]
            return self._patches.read(start, end - start)
        return b"".join(self._patches.read(start, end - start) for start, end in pieces)


def _without_execute_slots_at(
    debugregs: Sequence[int], slots: SlotTable, address: int
) -> tuple[int, ...]:
    """``debugregs`` with the execute slots at ``address`` disabled in DR7."""
    regs = list(debugregs)
    for a in slots.assignments():
        if a.kind is SlotKind.EXECUTE and a.address == address:
            regs[7] &= ~(0b11 << (2 * a.index))  # Ln and Gn (SDM vol. 3, 18.2.4)
    return tuple(regs)


def _slot_kind(access: Access) -> SlotKind:
    # x86 has no read-only data breakpoints: a read watch is an access watch
    # filtered by value, as gdb does.
    return SlotKind.WRITE if access is Access.WRITE else SlotKind.ACCESS


class _DecodeRegisters(Mapping[str, int]):
    """The registers :func:`instructions.memory_accesses` asks for, by gdb name."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    def __getitem__(self, name: str) -> int:
        if name in ("fs_base", "gs_base"):
            return int(getattr(self._machine.get_sregs(), name[:2]).base)
        try:
            return int(getattr(self._machine.regs, name))
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
