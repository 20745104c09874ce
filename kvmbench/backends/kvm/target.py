"""kvmbench's own VMM as a debug :class:`~kvmbench.backends.target.Target`.

The KVM facts the engine must not know live here (DESIGN.md, "The host this
project is developed on"):

- the software trap: int3 with KVM_GUESTDBG_USE_SW_BP where the probe found
  it delivered, else ``hlt`` (KVM_EXIT_HLT, rip after it); both, and an
  int3 the host failed to emulate, are reported as a TrapExecuted at the
  trap with rip rewound onto it, and :meth:`KvmTarget.hand_back` gives the
  guest's own back (its hlt waits for the timer, its int3 reaches its
  handler);
- leaving a hit of an execute slot: RF where the host honours it, else one
  single-step with that slot masked in DR7;
- page traps: read-only memslots; a store there is completed with
  immediate_exit so that rip stands at an instruction boundary, and a store
  KVM's emulator cannot complete (fxsave, movq on some hosts) is stepped
  once with the pages writable.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

from kvmbench.arch import x86_64
from kvmbench.arch.profiles import X86_64, SlotKind
from kvmbench.arch.x86_64 import Dr6, Rflags
from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.backends.kvm import abi, layout
from kvmbench.backends.kvm.exits import Debug, Hlt
from kvmbench.backends.kvm.fpu import FPU_REGISTERS, fpu_register
from kvmbench.backends.kvm.machine import (
    GuestExited,
    Int3Undelivered,
    Machine,
    MachineEvent,
    TrappedStore,
)
from kvmbench.backends.kvm.machine import Paused as MachinePaused
from kvmbench.backends.target import (
    CONTINUE,
    Exited,
    GuestDebugTrap,
    Halted,
    Paused,
    Resume,
    ResumeMode,
    SlotHit,
    SlotProgram,
    SoftwareTrap,
    Stepped,
    StoreStepped,
    StoreTrapped,
    StubAccess,
    TargetCapabilities,
    TargetEvent,
    TrapExecuted,
)
from kvmbench.errors import GuestMemoryError, KvmInternalError, SessionStateError, UsageError

INT3_TRAP = SoftwareTrap("int3 trap", 0xCC)
HLT_TRAP = SoftwareTrap("hlt trap", 0xF4)

_EMULATION_FAILED = 1  # KVM_INTERNAL_ERROR_EMULATION (api.rst)
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_REGS = frozenset(x86_64.KVM_REGS_FIELDS)
_MASK64 = (1 << 64) - 1


def capabilities_for(features: HostCapabilities) -> TargetCapabilities:
    """What kvmbench's VMM offers on a host with these probed ``features``."""
    traps = tuple(t for t, f in ((INT3_TRAP, Feature.INT3), (HLT_TRAP, Feature.HLT_TRAP))
                  if features.works(f))
    return TargetCapabilities(
        name="kvm",
        features=features,
        slot_profile=X86_64,
        software_traps=traps,
        write_traps=features.works(Feature.READONLY_MEMSLOT),
        physical_memory=True,
        step_blocks_interrupts=True,
        reserved=(
            (layout.PML4_ADDR, layout.GDT_ADDR, "page tables"),
            (layout.GDT_ADDR, layout.IDT_ADDR, "GDT"),
            (layout.IDT_ADDR, layout.FAULT_STUBS_ADDR, "IDT"),
            (layout.FAULT_STUBS_ADDR, layout.BOOT_ARGS_ADDR, "fault stubs"),
            (layout.BOOT_ARGS_ADDR, layout.BOOT_ARGS_ADDR + layout.BOOT_ARGS_SIZE, "boot arguments"),
        ),
    )


class KvmTarget:
    """A booted :class:`~kvmbench.backends.kvm.machine.Machine` under the engine."""

    def __init__(self, machine: Machine, features: HostCapabilities) -> None:
        self.machine = machine
        self._capabilities = capabilities_for(features)
        self._features = features
        self._debugregs: tuple[int, ...] = (0,) * 8
        self._execute_slots: dict[int, int] = {}  # address -> DR7 enable bits
        self._trap_opcodes: frozenset[int] = frozenset()
        self._intercept_guest_traps = False
        self._controls: dict[tuple[bool, bool], int] = {}
        #: How the last int3 TrapExecuted came about: "int3" (a #BP exit) or
        #: "undelivered" (the host could not run it), for hand_back.
        self._trap_kind = ""
        #: An event a store's completion produced, reported by the next resume.
        self._pending: TargetEvent | None = None
        #: The guest is in the halt state with nothing that can wake it: a
        #: resume leaves it there (as a halted CPU) until its registers change.
        self._halted = False
        # The engine's hot path (a hit reads code and a stack slot and writes
        # a push): the machine's own methods, one call each, not two.
        self.translate = machine.translate  # type: ignore[method-assign]
        self.read_physical = machine.memory.read  # type: ignore[method-assign]
        self.write_physical = machine.memory.write  # type: ignore[method-assign]

    # --- the protocol: facts ---------------------------------------------------

    @property
    def capabilities(self) -> TargetCapabilities:
        return self._capabilities

    @property
    def console(self) -> str:
        return self.machine.console.text

    @property
    def closed(self) -> bool:
        return self.machine.vcpu.fd < 0

    @property
    def exit_code(self) -> int | None:
        return self.machine.exit_code

    # --- registers -----------------------------------------------------------------

    def read_register(self, name: str) -> int:
        regs = self.machine.regs
        if name in _REGS:
            return int(getattr(regs, name))
        if name == "eflags":
            return int(regs.rflags)
        if name in ("fs_base", "gs_base"):
            return int(getattr(self.machine.get_sregs(), name[:2]).base)
        if name in _SEGMENTS:
            return int(getattr(self.machine.get_sregs(), name).selector)
        if name in FPU_REGISTERS:
            return fpu_register(self.machine.vcpu.get_fpu(), name)
        raise UsageError(f"no register named {name!r}")

    def write_register(self, name: str, value: int) -> None:
        key = "rflags" if name == "eflags" else name
        if key not in _REGS:
            raise UsageError(f"register {name!r} cannot be written on this target")
        setattr(self.machine.regs, key, value & _MASK64)
        self.machine.mark_regs_dirty()
        self._halted = False  # the user moves the guest out of its halt

    def read_registers(self) -> Mapping[str, int]:
        regs = self.machine.regs
        return {name: int(getattr(regs, name)) for name in x86_64.KVM_REGS_FIELDS}

    @property
    def pc(self) -> int:
        return int(self.machine.regs.rip)

    def set_pc(self, pc: int) -> None:
        self.machine.regs.rip = pc
        self.machine.mark_regs_dirty()
        self._halted = False

    # --- memory --------------------------------------------------------------------

    def read_memory(self, address: int, length: int) -> bytes:
        return self.machine.read_virtual(address, length)

    def write_memory(self, address: int, data: bytes) -> None:
        self.machine.write_virtual(address, data)

    def translate(self, address: int) -> int:
        return self.machine.translate(address)

    def read_physical(self, address: int, length: int) -> bytes:
        return self.machine.memory.read(address, length)

    def write_physical(self, address: int, data: bytes) -> None:
        self.machine.memory.write(address, data)

    def contains_physical(self, address: int, length: int = 1) -> bool:
        return self.machine.memory.contains(address, length)

    def flush_translations(self) -> None:
        self.machine.flush_tlb()

    def flush_console(self) -> None:
        self.machine.console.flush()

    # --- mechanisms ------------------------------------------------------------------

    def set_debug_slots(self, slots: Sequence[SlotProgram]) -> None:
        self._debugregs = x86_64.debugregs_for(
            x86_64.DebugSlot(s.index, s.address, s.kind, s.length) for s in slots)
        execute: dict[int, int] = {}
        for s in slots:
            if s.kind is SlotKind.EXECUTE:
                execute[s.address] = execute.get(s.address, 0) | 0b11 << (2 * s.index)
        self._execute_slots = execute
        self._controls.clear()

    def set_software_traps(self, opcodes: frozenset[int], intercept_guest_traps: bool) -> None:
        self._trap_opcodes = opcodes
        self._intercept_guest_traps = intercept_guest_traps
        self._controls.clear()

    def set_write_traps(self, pages: frozenset[int]) -> None:
        self.machine.memory.set_readonly_pages(pages)

    def insert_stub_breakpoint(self, address: int, kind: str) -> bool:
        return False  # kvmbench's VMM is no stub: the engine owns its traps

    def remove_stub_breakpoint(self, address: int, kind: str) -> None:
        pass

    def insert_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> bool:
        return False

    def remove_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> None:
        pass

    # --- running ---------------------------------------------------------------------

    def pause(self) -> None:
        if not self.closed:
            self.machine.request_pause()

    def resume(self, how: Resume = CONTINUE) -> TargetEvent:
        if self.closed:
            raise SessionStateError("the machine is closed")
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        if self._halted:
            return Halted(self.pc)
        count = how.count
        skip = how.skip_slots_at
        if skip is not None and skip in self._execute_slots:
            if self._features.works(Feature.RESUME_FLAG):
                # RF suppresses an instruction breakpoint for one instruction
                # (SDM vol. 3, 18.3.1.1).
                regs = self.machine.regs
                regs.rflags |= Rflags.RF
                self.machine.mark_regs_dirty()
            else:
                # RF does not keep DRn from firing again on this host: step
                # once with the slots at this address left out of DR7.
                event = self._step(1, (), hold=True, masked=self._execute_slots[skip])
                if not isinstance(event, Stepped) or how.mode is ResumeMode.STEP and count == 1:
                    return event
                if how.mode is ResumeMode.STEP:
                    count -= 1
        if how.mode is ResumeMode.STEP:
            return self._step(count, how.stop_at, how.hold_interrupts)
        return self._continue()

    def _control(self, stepping: bool, hold: bool) -> int:
        """KVM_SET_GUEST_DEBUG's control word, computed once per change of
        slots or traps (set_debug_slots and set_software_traps forget it)."""
        key = (stepping, hold)
        control = self._controls.get(key)
        if control is None:
            control = self._controls[key] = self._compute_control(stepping, hold)
        return control

    def _compute_control(self, stepping: bool, hold: bool) -> int:
        control = 0
        if self._execute_slots or self._debugregs[7] & 0xFF:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP
        if INT3_TRAP.opcode in self._trap_opcodes or self._intercept_guest_traps:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_SW_BP
        if stepping:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP
            if hold and self._features.works(Feature.BLOCKIRQ):
                control |= abi.KVM_GUESTDBG_BLOCKIRQ
        return control

    def _continue(self) -> TargetEvent:
        machine = self.machine
        machine.hold_interrupts = False
        machine.set_guest_debug(self._control(False, False), self._debugregs)
        try:
            event = machine.run()
        except KvmInternalError as e:
            return self._step_untrapped(e)
        return self._translate(event, stepping=False)

    def _step(self, count: int, stop_at: Container[int], hold: bool,
              masked: int = 0) -> TargetEvent:
        machine = self.machine
        debugregs = self._debugregs
        if masked:
            regs = list(debugregs)
            regs[7] &= ~masked  # Ln and Gn of the masked slots (SDM vol. 3, 18.2.4)
            debugregs = tuple(regs)
        machine.hold_interrupts = hold
        rsp = machine.regs.rsp
        try:
            machine.set_guest_debug(self._control(True, hold), debugregs)
            done, event = machine.step(count, stop_at)
        except KvmInternalError as e:
            return self._step_untrapped(e)
        finally:
            machine.hold_interrupts = False
        if event is None:
            return self._stepped(done, rsp)
        translated = self._translate(event, stepping=True)
        if isinstance(translated, Paused):
            return Paused(translated.pc, done)
        if done:
            # The steps done come first; the event that ended them follows
            # at the next resume, without running the guest.
            self._pending = translated
            return Stepped(self.pc, done, machine.last_step_dr6)
        return translated

    def _stepped(self, done: int, rsp_before: int) -> Stepped:
        machine = self.machine
        if not machine.injected_interrupt or done != 1:
            return Stepped(self.pc, done, machine.last_step_dr6)
        # The step delivered the timer interrupt: the CPU aligned rsp down
        # to 16 and pushed ss, rsp, rflags, cs, rip (SDM vol. 3, 6.14.2),
        # then ran the handler's first instruction (measured on kvm_pvm).
        frame = ((rsp_before & ~0xF) - 40) & _MASK64
        return Stepped(self.pc, done, machine.last_step_dr6,
                       interrupt_handler=self._gate_offset(layout.TIMER_VECTOR),
                       interrupt_frame=frame)

    def _gate_offset(self, vector: int) -> int | None:
        """The handler address in the guest IDT's 64-bit gate for ``vector``."""
        idt = self.machine.get_sregs().idt
        if vector * 16 + 15 > idt.limit:
            return None
        try:
            gate = self.read_memory(idt.base + vector * 16, 16)
        except GuestMemoryError:
            return None
        low, high = int.from_bytes(gate[0:2], "little"), int.from_bytes(gate[6:8], "little")
        upper = int.from_bytes(gate[8:12], "little")
        return low | high << 16 | upper << 32

    def _step_untrapped(self, failure: KvmInternalError) -> TargetEvent:
        """A store KVM's emulator could not complete on a trapped page
        (fxsave; movq on some hosts): step it once with every write trap
        lifted, so the guest never fails because of a watch."""
        machine = self.machine
        pages = machine.memory.readonly_pages
        if failure.suberror != _EMULATION_FAILED or not pages:
            raise failure
        writer = self.pc
        machine.memory.set_readonly_pages(())
        machine.hold_interrupts = True
        try:
            machine.set_guest_debug(self._control(True, True), self._debugregs)
            _, event = machine.step(1)
        except KvmInternalError:
            raise failure from None  # the host cannot run it at all: not the trap's doing
        finally:
            machine.hold_interrupts = False
            machine.memory.set_readonly_pages(pages)
        if event is not None:
            return self._translate(event, stepping=True)
        return StoreStepped(writer, self.pc, pages)

    def _translate(self, event: MachineEvent, stepping: bool) -> TargetEvent:
        machine = self.machine
        if type(event) is Hlt:  # the hot path: a hlt trap's hit (or the guest's own hlt)
            # rip stands after the hlt; rewind onto it, as for an int3.
            regs = machine.regs
            pc = (regs.rip - 1) & _MASK64
            regs.rip = pc
            machine.mark_regs_dirty()
            self._halted = False
            return TrapExecuted(pc, "hlt")
        if isinstance(event, TrappedStore):
            if event.debug is not None and event.debug.dr6 & 0xF:
                self._pending = self._translate(event.debug, stepping)
            return StoreTrapped(event.pieces, self.pc)
        if isinstance(event, Debug):
            if event.exception == 3:
                self._trap_kind = "int3"
                return TrapExecuted(event.pc)
            # Bn may be set for a slot that matched without being enabled
            # (SDM vol. 3, 18.2.3), and hosts differ in the DR7 they report:
            # keep the slots we programmed.
            fired = x86_64.triggered_slots(event.dr6, self._debugregs[7])
            if fired:
                return SlotHit(fired, self.pc, event.dr6)
            if event.dr6 & Dr6.BS and stepping:
                return Stepped(self.pc, 1, event.dr6)
            return GuestDebugTrap(1, self.pc)
        if isinstance(event, Hlt):
            # rip stands after the hlt; rewind onto it, as for an int3.
            pc = (self.pc - 1) & _MASK64
            self.set_pc(pc)
            return TrapExecuted(pc, "hlt")
        if isinstance(event, Int3Undelivered):
            self._trap_kind = "undelivered"
            return TrapExecuted(event.pc)
        if isinstance(event, MachinePaused):
            return Paused(self.pc)
        if isinstance(event, GuestExited):
            return Exited(event.code)
        raise AssertionError(f"unhandled machine event {event!r}")

    def hand_back(self, event: TargetEvent) -> TargetEvent | None:
        machine = self.machine
        if isinstance(event, TrapExecuted):
            if event.instruction == "hlt":
                # The guest's own hlt: it waits for an interrupt, which only
                # the timer brings, and only with interrupts enabled.
                self.set_pc(event.pc + 1)
                if machine.timer_running and machine.regs.rflags & Rflags.IF:
                    machine.halt()
                    machine.wake_from_halt()
                    return None
                self._halted = True
                return Halted(event.pc + 1)
            machine.deliver_breakpoint(event.pc, trapped=self._trap_kind == "int3")
            return None
        if isinstance(event, GuestDebugTrap):
            machine.inject_exception(event.vector)
            return None
        raise UsageError(f"{type(event).__name__} is not a trap to hand back")

    def close(self) -> None:
        self.machine.close()
