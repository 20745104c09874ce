"""Run control: continue, stepping, finish, until and advance, built on one
resume loop over the target.

Exactness rules this module keeps (README, "What each mechanism guarantees"):

- Resuming from a stop never reports a breakpoint at the stop's own pc: its
  hit was reported (or the user stopped there); the instruction is run
  first ("stepped off") without counting, as gdb does.
- Every other arrival at a breakpoint counts once per execution of its
  instruction, whatever came before (a completed store, a step, a guest
  hlt): a trap fires where the guest goes next, and the step off a hit runs
  the instruction exactly once. A rep-prefixed string instruction is one
  execution: stepping off it runs all its iterations.
- Stepping holds the guest's interrupts off, except where step-compare
  watches turn a continue into steps: then interrupts arrive between steps,
  so a guest waiting for its timer still gets it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kvmbench.arch import instructions
from kvmbench.arch.stores import push_effect
from kvmbench.backends.capabilities import Feature
from kvmbench.backends.target import (
    CONTINUE,
    Exited,
    Halted,
    Paused,
    ProbesDue,
    Resume,
    ResumeMode,
    Stepped,
    StoreStepped,
    StoreTrapped,
    TargetEvent,
    TrapExecuted,
)
from kvmbench.engine.counting import Internal
from kvmbench.engine.model import Breakpoint, Mechanism, Stop, StopReason
from kvmbench.engine.stops import (
    BreakpointHit,
    GuestOwned,
    ProbesToDrain,
    RunEnded,
    StoreToTrappedPage,
    WatchTrapped,
    classify,
)
from kvmbench.engine.views import RegisterValues
from kvmbench.errors import FrameUnknown, GuestMemoryError, KvmbenchError, UsageError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

_MASK64 = (1 << 64) - 1
_HLT = b"\xf4"  # SDM vol. 2, HLT


class RunControl:
    """The run loops of one session (called with the session marked running)."""

    def __init__(self, session: "Session") -> None:
        self._s = session
        #: An execute slot at this pc must not fire on the next resume (its
        #: hit was counted, and the host honours RF).
        self._skip_slots_at: int | None = None
        #: A guest trap caught and shown to the user; resuming delivers it.
        self._caught: GuestOwned | None = None
        #: The pc whose breakpoint hit is counted and not yet left.
        self._counted_at: int | None = None
        self._next_internal = -1
        #: Steps in progress over these pcs, with the trap bytes lifted for them.
        self._stepping: list[_SteppedOver] = []

    # --- the resume every loop goes through ---------------------------------------

    def resume(self, how: Resume) -> TargetEvent:
        """Resume the target once. A pause that only made room for changes
        from another thread (:meth:`Session.apply_while_paused`) is not an
        event: the run goes on."""
        s = self._s
        probes = s.probes
        while True:
            if probes.lifted:
                probes.settle(s.target.pc)
            s.serving.program()
            event = s.target.resume(how)
            if not isinstance(event, Paused) or not s.apply_while_paused():
                return event
            self._relift()
            if how.mode is ResumeMode.STEP:
                left = how.count - event.steps
                if left <= 0:
                    return Stepped(event.pc, how.count)
                how = replace(how, count=left)
            how = replace(how, skip_slots_at=None) if event.steps else how

    def _lift(self, pc: int) -> "_SteppedOver":
        """Step over ``pc``: lift our trap byte there (now, and whenever a
        change during the step plants one) until :meth:`_rearm`."""
        over = _SteppedOver(pc)
        self._stepping.append(over)
        self._lift_at(over)
        return over

    def _lift_at(self, over: "_SteppedOver") -> None:
        s = self._s
        if s.serving.patches is not None and s.serving.software_trap_at(over.pc):
            physical = s.target.translate(over.pc)
            s.serving.patches.lift(physical)
            over.physical.add(physical)
        site = s.probes.site_at(over.pc) if over.pc is not None else None
        if site is not None:
            s.probes.lift(site)  # planted again once rip has left its bytes (settle)

    def lift_physical(self, physical: int) -> "_SteppedOver":
        """Lift the trap byte at guest-physical ``physical`` until :meth:`rearm`."""
        over = _SteppedOver(None, {physical})
        self._s.serving.patches.lift(physical)  # type: ignore[union-attr]
        self._stepping.append(over)
        return over

    def rearm(self, over: "_SteppedOver") -> None:
        """Plant the trap bytes lifted for a step again."""
        self._rearm(over)

    def _rearm(self, over: "_SteppedOver") -> None:
        self._stepping.remove(over)
        still = {a for other in self._stepping for a in other.physical}
        patches = self._s.serving.patches
        for physical in over.physical - still:
            patches.rearm(physical)  # type: ignore[union-attr]

    def _relift(self) -> None:
        """Changes applied during a pause may have planted a trap where a
        step is running (a breakpoint added, or deleted and added again)."""
        patches = self._s.serving.patches
        if patches is None:
            return
        for over in self._stepping:
            for physical in over.physical:
                patch = patches.get(physical)
                if patch is not None and patch.armed:
                    patches.lift(physical)
            if over.pc is not None:
                self._lift_at(over)

    def _take_skip(self) -> int | None:
        skip, self._skip_slots_at = self._skip_slots_at, None
        return skip

    # --- acting on events ---------------------------------------------------------

    def handle(self, event: TargetEvent) -> Stop | None:
        """Act on one event: the stop it makes, or None to go on."""
        s = self._s
        decision = classify(event, s.serving)
        if isinstance(decision, BreakpointHit):
            stop = s.counting.breakpoint_hit(decision)
            self._counted_at = decision.pc
            if stop is not None:
                return stop
            return self.step_off(decision.pc, decision.requests)
        if isinstance(decision, StoreToTrappedPage):
            e = decision.event
            return s.stores.on_store(e) if isinstance(e, StoreTrapped) else s.stores.on_store_stepped(e)
        if isinstance(decision, WatchTrapped):
            return s.stores.on_watch_trapped(decision)
        if isinstance(decision, GuestOwned):
            if decision.catch:
                self._caught = decision
                return Stop(StopReason.GUEST_TRAP, s.target.pc, detail=decision.detail)
            ended = s.target.hand_back(decision.event)
            return None if ended is None else self._ended(ended)
        if isinstance(decision, RunEnded):
            return self._ended(decision.event)
        if isinstance(decision, ProbesToDrain):
            s.probes.drain()
            return None
        return None  # a step: whoever stepped looks at it

    def _ended(self, event: TargetEvent) -> Stop:
        if isinstance(event, Exited):
            return Stop(StopReason.EXITED, None, exit_code=event.code, detail=event.detail)
        if isinstance(event, Halted):
            return Stop(StopReason.HALTED, event.pc, detail=(
                "the guest halted (hlt) with interrupts disabled or no timer running: "
                "nothing can wake it"))
        assert isinstance(event, Paused)
        return Stop(StopReason.PAUSED, event.pc)

    # --- leaving a breakpoint -------------------------------------------------------

    def leave(self) -> Stop | None:
        """Before a run: deliver a caught guest trap; run the instruction at
        the stop pc without counting its breakpoints (their hit was reported)."""
        s = self._s
        pc = s.target.pc
        caught, self._caught = self._caught, None
        if caught is not None and getattr(caught.event, "pc", None) == pc:
            ended = s.target.hand_back(caught.event)
            if ended is not None:
                return self._ended(ended)
            if s.target.pc != pc:
                return None
        if s.probes.lifted_around(pc):
            return self.leave_probe()
        if pc == s.reported_pc and s.serving.breakpoints_at(pc):
            if s.probes.site_at(pc) is not None and self._counted_at != pc:
                # Stopped at a probe before its jump ran (a pause): running
                # the jump counts this execution, in the guest.
                return None
            self._counted_at = pc
            return self.step_off(pc)
        return None

    def leave_probe(self) -> Stop | None:
        """Step, interrupts held, until rip has left the bytes of a lifted
        probe: no interrupt may save a rip there, and the probe is planted
        again (settle) only once rip is past them."""
        s = self._s
        while s.probes.lifted_around(s.target.pc):
            stop = self.step_instruction()
            if stop is not None:
                return stop
        self._counted_at = None
        return None

    def step_off(self, pc: int, users: Sequence[Breakpoint] | None = None) -> Stop | None:
        """Run the instruction at ``pc``, whose breakpoints already counted
        (``users``: those armed there, if the caller has them): emulate a
        displaced push, else let the next resume skip a hardware slot with
        RF, else step it with its traps lifted and slots masked."""
        s = self._s
        if users is None:
            users = [b for b in s.serving.breakpoints_at(pc) if b.mechanism is not None]
        if not users:
            return None
        if s.probes.sites and s.probes.site_at(pc) is not None:
            # Step the original instructions under the jump, all of them.
            return self.run_out(pc) or self.leave_probe()
        # The engine may run the instruction itself only where nothing else
        # must see it execute: no step-compare watch, no target counter there.
        emulable = not s.serving.step_compare_watches and not s.exec_counters.counts(pc)
        if emulable and self._emulate_push(pc):
            self._counted_at = None
            return None
        hardware_only = all(b.mechanism is Mechanism.HW_EXECUTE for b in users)
        if hardware_only and s.target.capabilities.works(Feature.RESUME_FLAG):
            self._skip_slots_at = pc
            return None
        return self.run_out(pc)

    def _emulate_push(self, pc: int) -> bool:
        """Execute a ``push r64`` at a breakpoint in the engine (no single-step).

        Function entries start with ``push rbp`` at -O0 and in most kernels;
        emulating it makes a breakpoint hit cost one resume, not three. Not
        done when a watchpoint covers the stack slot: the CPU must store it.
        """
        s = self._s
        try:
            effect = push_effect(s._mem.read(pc, 2), RegisterValues(s.target))
        except (GuestMemoryError, KeyError):
            return False
        if effect is None or s.serving.watches_at(effect.address, 8):
            return False
        try:
            s._mem.write(effect.address, effect.value.to_bytes(8, "little"))
        except GuestMemoryError:
            return False  # let the CPU raise the fault
        s.target.write_register("rsp", effect.address)
        s.target.set_pc((pc + effect.length) & _MASK64)
        return True

    def run_out(self, pc: int) -> Stop | None:
        """Step the instruction at ``pc`` until rip leaves it (all iterations
        of a rep string instruction), its traps lifted and its slots masked."""
        s = self._s
        over = self._lift(pc)
        try:
            try:
                repeats = instructions.decode(s._mem.read(pc, 15), pc).repeat
            except KvmbenchError:
                repeats = False
            while True:
                event, stop = self._step(hold=True, skip_at=pc)
                if stop is not None:
                    return stop
                if isinstance(event, (Paused, Exited, Halted)):
                    return self._ended(event)
                if not (repeats and s.target.pc == pc):
                    self._counted_at = None
                    return None
        finally:
            self._rearm(over)

    def _is_hlt(self, pc: int) -> bool:
        """True if the guest's instruction at ``pc`` is hlt (our traps hidden)."""
        try:
            return self._s._mem.read(pc, 1) == _HLT
        except GuestMemoryError:
            return False

    def step_instruction(self) -> Stop | None:
        """One step of the instruction at rip, interrupts held (a replay)."""
        event, stop = self._step(hold=True, skip_at=None)
        if stop is None and isinstance(event, (Paused, Exited, Halted)):
            return self._ended(event)
        return stop

    def _step(self, hold: bool, skip_at: int | None) -> tuple[TargetEvent, Stop | None]:
        """One single-step, its events acted on, with step-compare watches
        checked. A trapped store ends a step: the store's exit is the end of
        the instruction (measured on kvm_pvm: no step exit follows)."""
        s = self._s
        compare = s.stepcompare
        before = compare.expect() if compare.watches else None
        if (before.insn.mnemonic == "hlt" if before is not None and before.insn is not None
                else self._is_hlt(s.target.pc)):
            # Never single-step a hlt: on some hosts (kvm_pvm) the step ends
            # at once and the guest's wait for an interrupt is lost. The
            # target runs it as the guest's own instead.
            ended = s.target.hand_back(TrapExecuted(s.target.pc, "hlt"))
            if ended is not None:
                return ended, self._ended(ended)
            event = Stepped(s.target.pc)
            return event, (compare.check(before, event) if before is not None else None)
        event = self.resume(Resume(ResumeMode.STEP, skip_slots_at=skip_at, hold_interrupts=hold))
        if isinstance(event, Stepped):
            return event, (compare.check(before, event) if before is not None else None)
        stop = self.handle(event)
        if before is not None and stop is None and isinstance(event, (StoreTrapped, StoreStepped)):
            stop = compare.check(before, Stepped(s.target.pc))
        return event, stop

    # --- continue -----------------------------------------------------------------

    def cont(self) -> Stop:
        """Run until a breakpoint, watchpoint, pause, exit or crash."""
        s = self._s
        stop = self.leave()
        if stop is not None:
            return stop
        serving = s.serving
        while True:
            if serving.step_compare_watches:
                stop = self._compared_step()
            else:
                skip = self._take_skip()
                stop = self.handle(self.resume(CONTINUE if skip is None else Resume(skip_slots_at=skip)))
            if stop is not None:
                return stop

    def _compared_step(self) -> Stop | None:
        """One instruction of a continue under step-compare watches: a
        breakpoint arrived at counts, interrupts may come in between."""
        s = self._s
        pc = s.target.pc
        stop = self._arrive(pc)
        if stop is not None:
            return stop
        over = self._lift(pc)
        try:
            # No interrupt may save a rip inside a probe's bytes: they hold
            # a jump again once rip has left them.
            event, stop = self._step(hold=s.probes.covering(pc) is not None, skip_at=pc)
        finally:
            self._rearm(over)
        if s.target.pc != pc:
            self._counted_at = None
        if stop is None and isinstance(event, (Paused, Exited, Halted)):
            return self._ended(event)
        return stop

    def arrive(self, pc: int) -> Stop | None:
        """Count the breakpoints at ``pc``, which a step just reached (source
        stepping checks every instruction it lands on); the stop one makes."""
        return self._arrive(pc)

    def _arrive(self, pc: int) -> Stop | None:
        """Count the breakpoints at ``pc`` if the guest reached it by stepping."""
        s = self._s
        requests = tuple(b for b in s.serving.breakpoints_at(pc) if b.mechanism is not None)
        if not requests or self._counted_at == pc:
            return None
        self._counted_at = pc
        return s.counting.breakpoint_hit(BreakpointHit(pc, requests[0].mechanism, requests))  # type: ignore[arg-type]

    # --- stepping -------------------------------------------------------------------

    def stepi(self, count: int) -> Stop:
        """``count`` instructions, stepping into calls. Breakpoints the steps
        arrive at count (a tracepoint does not end the steps; a breakpoint
        does, as in gdb); steps between them run in the target alone."""
        s = self._s
        done, dr6 = 0, 0
        first = True
        while done < count:
            pc = s.target.pc
            if not first:
                stop = self._arrive(pc)
                if stop is not None:
                    stop.extra["steps"] = done
                    return stop
            first = False
            if s.serving.breakpoints_at(pc) or s.stepcompare.watches:
                if s.serving.breakpoints_at(pc):
                    self._counted_at = pc
                    stop = self.run_out(pc) if not s.stepcompare.watches else self._step_at(pc)
                else:
                    stop = self._step_at(pc)
                done += 1
                if stop is not None:
                    stop.extra["steps"] = done
                    return stop
                continue
            event = self.resume(Resume(ResumeMode.STEP, count=count - done,
                                       stop_at=s.serving.armed, hold_interrupts=True))
            if isinstance(event, Stepped):
                done += event.count
                dr6 = event.dr6
                continue
            if isinstance(event, ProbesDue):
                s.probes.drain()  # no step ended by it
                continue
            if not isinstance(event, Exited):
                done += 1  # the event ended a step (a store, a guest hlt handed back)
            stop = self.handle(event)
            if stop is not None:
                stop.extra["steps"] = done
                return stop
        if done:  # the last step arrived at a breakpoint: it counts, as in gdb
            stop = self._arrive(s.target.pc)
            if stop is not None:
                stop.extra["steps"] = done
                return stop
        return Stop(StopReason.STEP, s.target.pc, extra={"dr6": dr6, "steps": done})

    def _step_at(self, pc: int) -> Stop | None:
        """One step of the guest's own instruction at ``pc`` (our trap there
        lifted, its slots masked), step-compare watches checked."""
        over = self._lift(pc)
        try:
            event, stop = self._step(hold=True, skip_at=pc)
        finally:
            self._rearm(over)
        if stop is None and isinstance(event, (Paused, Exited, Halted)):
            return self._ended(event)
        return stop

    def nexti(self, count: int) -> Stop:
        """``count`` instructions, running called functions to their return."""
        s = self._s
        stop = Stop(StopReason.STEP, s.target.pc)
        for _ in range(count):
            insn = self._current_instruction()
            if insn.is_call:
                rsp = s.target.read_register("rsp")
                stop = self.run_to(insn.next_address, StopReason.STEP,
                                   lambda: s.target.read_register("rsp") >= rsp)
            else:
                stop = self.stepi(1)
            if stop.reason is not StopReason.STEP:
                break
        return stop

    def until_next(self) -> Stop:
        """gdb's ``until`` without a location: step over, but do not stop in
        a loop that jumps backwards."""
        s = self._s
        insn = self._current_instruction()
        target = insn.branch_target
        if insn.is_jump and target is not None and target <= insn.address:
            rsp = s.target.read_register("rsp")
            return self.run_to(insn.next_address, StopReason.STEP,
                               lambda: s.target.read_register("rsp") >= rsp)
        return self.nexti(1)

    def _current_instruction(self) -> instructions.Instruction:
        pc = self._s.target.pc
        return instructions.decode(self._s._mem.read(pc, 15), pc)

    # --- internal breakpoints -----------------------------------------------------

    def _internal(self, address: int, location: str) -> Breakpoint:
        bp = Breakpoint(number=self._next_internal, location=location, address=address,
                        internal=True)
        self._next_internal -= 1
        return bp

    def run_to(self, address: int, reason: StopReason, in_frame: Callable[[], bool]) -> Stop:
        """Continue with an internal breakpoint at ``address``."""
        return self._run_with([(self._internal(address, f"{address:#x}"), reason, in_frame)])

    def _run_with(self, internals: list[tuple[Breakpoint, StopReason, Callable[[], bool]]]) -> Stop:
        s = self._s
        served: list[Breakpoint] = []
        try:
            for bp, reason, in_frame in internals:
                s.serving.serve_breakpoint(bp)
                served.append(bp)
                s.counting.internal[bp.number] = Internal(bp, reason, in_frame)
            return self.cont()
        finally:
            for bp in served:
                s.counting.internal.pop(bp.number, None)
                s.serving.unserve_breakpoint(bp)

    def finish(self) -> Stop:
        """Run until the current function returns; the stop carries rax."""
        s = self._s
        frame = s.frames.frame_return()
        if frame is None:
            raise FrameUnknown('"finish" not meaningful in the outermost frame.')
        return_address, frame_top = frame
        stop = self.run_to(return_address, StopReason.FINISH,
                           lambda: s.target.read_register("rsp") >= frame_top)
        if stop.reason is StopReason.FINISH:
            stop = Stop(StopReason.FINISH, stop.pc, return_value=s.target.read_register("rax"))
        return stop

    def run_to_location(self, address: int, location: str, same_frame: bool) -> Stop:
        """gdb's ``advance`` (any frame) or ``until LOCATION`` (this frame),
        both also stopping when the current function returns."""
        s = self._s
        frame = s.frames.frame_return()
        rsp = s.target.read_register("rsp")
        in_frame: Callable[[], bool] = (
            (lambda: s.target.read_register("rsp") >= rsp) if same_frame else (lambda: True))
        internals = [(self._internal(address, location), StopReason.LOCATION, in_frame)]
        if frame is not None:  # the outermost frame never returns
            return_address, frame_top = frame
            internals.append((self._internal(return_address, f"{return_address:#x}"),
                              StopReason.FINISH,
                              lambda: s.target.read_register("rsp") >= frame_top))
        return self._run_with(internals)


class _SteppedOver:
    """A step in progress over ``pc`` (None: over a byte, for a replay) and
    the guest-physical trap bytes lifted for it."""

    def __init__(self, pc: int | None, physical: set[int] | None = None) -> None:
        self.pc = pc
        self.physical: set[int] = physical if physical is not None else set()
