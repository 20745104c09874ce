"""The in-process VMM: one vCPU, guest RAM, a serial console, an exit port and
a periodic timer. It runs the guest until something the debug engine must
see happens (a debug exit, a hlt, a store to a read-only page, a pause, the
guest's exit) and returns that as a typed event.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmbench.backends.kvm import abi, boot, kick, layout
from kvmbench.backends.kvm.console import Console
from kvmbench.backends.kvm.exits import (
    Debug,
    FailEntry,
    Hlt,
    InternalError,
    IoIn,
    IoOut,
    Mmio,
    Shutdown,
    Unsupported,
    decode_exit,
)
from kvmbench.backends.kvm.exits import (
    KVM_EXIT_DEBUG,
    KVM_EXIT_HLT,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    KVM_EXIT_IRQ_WINDOW_OPEN,
    KVM_EXIT_MMIO,
)
from kvmbench.backends.kvm.memory import GuestMemory, translate
from kvmbench.backends.kvm.system import Kvm, Vcpu, Vm
from kvmbench.errors import (
    GuestCrashed,
    GuestMemoryError,
    GuestShutdown,
    KvmInternalError,
    SessionStateError,
    UnexpectedExit,
)


@dataclass(frozen=True, slots=True)
class Paused:
    """``request_pause`` stopped the guest."""


@dataclass(frozen=True, slots=True)
class GuestExited:
    """The guest wrote its exit code to the exit port."""

    code: int


@dataclass(frozen=True, slots=True)
class Int3Undelivered:
    """An int3 at ``pc`` that the host's KVM could not deliver.

    Hosts whose KVM emulates the guest (kvm_pvm) fail an int3 with an
    emulation error instead of running the guest's #BP handler. The VMM
    reports it so the engine can decide whose trap it is and deliver it
    (:meth:`Machine.inject_exception`)."""

    pc: int


@dataclass(slots=True)
class TrappedStore:
    """One instruction's stores to read-only pages, completed without
    running further (api.rst, KVM_RUN: re-entering with immediate_exit
    completes pending MMIO "without allowing any further instructions to be
    executed"). ``pieces`` are (guest-physical address, data), not yet in
    memory; a store across two pages comes as two. ``debug`` is a debug exit
    the completion itself produced (a single-step on hosts that report one)."""

    pieces: tuple[tuple[int, bytes], ...]
    debug: Debug | None = None


MachineEvent = Debug | Hlt | Mmio | TrappedStore | Paused | GuestExited | Int3Undelivered
_PAUSED = Paused()
_HLT = Hlt()
_RFLAGS_IF = 1 << 9
# DR6 (SDM vol. 3, 18.2.3): a plain single-step sets BS and no Bn.
_DR6_BS = 1 << 14
_DR6_STEP_OR_SLOT = _DR6_BS | 0xF


class _Timer(threading.Thread):
    """Kicks the vCPU every period so the run loop can inject a timer tick."""

    def __init__(self, machine: "Machine", period_us: int) -> None:
        super().__init__(name="kvmbench-timer", daemon=True)
        self._machine = machine
        self._period = period_us / 1e6
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self._period):
            self._machine._tick_due = True
            self._machine._kick()
            self._machine._wakeup.set()


class Machine:
    """A booted guest. Create with :meth:`boot`; release with :meth:`close`.

    Any one thread at a time may :meth:`run` the guest; any thread may
    :meth:`request_pause`. Registers live in the run page's sync area
    (KVM_CAP_SYNC_REGS): read them through :attr:`regs`, and call
    :meth:`mark_regs_dirty` after changing them.
    """

    def __init__(self, kvm: Kvm, vm: Vm, vcpu: Vcpu, memory: GuestMemory, console: Console) -> None:
        self.kvm, self.vm, self.vcpu, self.memory, self.console = kvm, vm, vcpu, memory, console
        self._run_page = vcpu.run_page
        self._run_address = ctypes.addressof(vcpu.run_page)
        # SAFETY: views of the exit union inside the run page, built once so
        # a hit does not build them; dropped with the page in close().
        exit_address = self._run_address + abi.kvm_run.exit.offset
        self._debug_exit = abi.kvm_debug_exit_arch.from_address(exit_address)
        self._mmio_exit = abi.kvm_run_mmio.from_address(exit_address)
        self._vcpu_runner = vcpu.runner()
        #: The guest's registers, valid whenever the guest is not running.
        self.regs: abi.kvm_regs = self._run_page.s.regs.regs
        self.exit_code: int | None = None
        #: DR6 of the last plain single-step :meth:`step` took.
        self.last_step_dr6 = 0
        #: While True no timer interrupt is injected (the engine is stepping).
        self.hold_interrupts = False
        #: Set when the last run injected an interrupt (a step then delivered it).
        self.injected_interrupt = False
        self._tick_due = False
        self._timer: _Timer | None = None
        self._pause_requested = False
        #: Set when a halted guest may wake: a tick is due, or a pause asked.
        self._wakeup = threading.Event()
        self._vcpu_thread: int | None = None
        #: Guest-virtual page -> guest-physical page, for the CR3 in ``_tlb_cr3``.
        self._tlb: dict[int, int] = {}
        self._tlb_cr3 = -1
        self._guest_debug = abi.kvm_guest_debug()
        self._guest_debug_last: tuple[int, tuple[int, ...]] | None = None

    @classmethod
    def boot(
        cls,
        image: Path,
        argv: Sequence[str] = (),
        mem_size: int = layout.DEFAULT_MEM_SIZE,
        on_console: Callable[[str], None] | None = None,
    ) -> "Machine":
        """Create a VM, load ``image`` and stop at its first instruction."""
        kick.install_kick_handler()
        kvm = Kvm.open()
        vm = vcpu = memory = None
        try:
            vm = kvm.create_vm()
            memory = GuestMemory(vm, mem_size)
            vcpu = vm.create_vcpu(0)
            boot.write_boot_structures(memory)
            entry = boot.load_elf(memory, image)
            argc, argv_address = boot.write_boot_args(memory, [image.stem, *argv])
            # CPUID before SREGS: KVM refuses EFER.LME for a vCPU without LM.
            vcpu.set_cpuid2(kvm.get_supported_cpuid())
            vcpu.set_sregs(boot.long_mode_sregs(vcpu.get_sregs()))
            regs = boot.initial_regs(entry, argc, argv_address)
            vcpu.set_regs(regs)
            run = vcpu.run_page
            run.kvm_valid_regs = abi.KVM_SYNC_X86_REGS | abi.KVM_SYNC_X86_SREGS
            # Until the first KVM_RUN the sync area is empty: seed it.
            run.s.regs.regs = regs
            run.s.regs.sregs = vcpu.get_sregs()
            run.kvm_dirty_regs = 0
            return cls(kvm, vm, vcpu, memory, Console(on_console))
        except BaseException:
            for part in (vcpu, memory, vm, kvm):
                if part is not None:
                    part.close()
            raise

    # --- registers and memory ------------------------------------------------

    def mark_regs_dirty(self) -> None:
        """Write :attr:`regs` back to the vCPU on the next run (one ioctl saved)."""
        self._run_page.kvm_dirty_regs |= abi.KVM_SYNC_X86_REGS

    def get_sregs(self) -> abi.kvm_sregs:
        """Special registers as of the last exit (synced through the run page:
        no ioctl). Read-only: the VMM never changes them after boot."""
        return self._run_page.s.regs.sregs

    def translate(self, address: int) -> int:
        """Guest-physical address of guest-virtual ``address``.

        Walks are cached per page until :meth:`flush_tlb` or a CR3 change, so
        a breakpoint hit costs no page walk. Like a CPU's TLB the cache does
        not see the guest edit its page tables; the debug engine flushes it
        at every stop the user sees.
        """
        sregs = self._run_page.s.regs.sregs
        if sregs.cr3 != self._tlb_cr3:
            self._tlb.clear()
            self._tlb_cr3 = sregs.cr3
        page = address >> 12
        frame = self._tlb.get(page)
        if frame is None:
            frame = translate(self.memory.read_u64, sregs.cr0, sregs.cr3, address & ~0xFFF)[0]
            self._tlb[page] = frame
        return frame | (address & 0xFFF)

    def flush_tlb(self) -> None:
        """Forget cached translations (the guest may have changed its page tables)."""
        self._tlb.clear()

    def read_virtual(self, address: int, length: int) -> bytes:
        """Bytes at a guest-virtual address, across page boundaries."""
        out = bytearray()
        while length > 0:
            chunk = min(length, 4096 - (address & 0xFFF))
            out += self.memory.read(self.translate(address), chunk)
            address += chunk
            length -= chunk
        return bytes(out)

    def write_virtual(self, address: int, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            chunk = min(len(data) - offset, 4096 - ((address + offset) & 0xFFF))
            self.memory.write(self.translate(address + offset), data[offset : offset + chunk])
            offset += chunk

    # --- debug control ---------------------------------------------------------

    def set_guest_debug(self, control: int, debugregs: Sequence[int] = (0,) * 8) -> None:
        """KVM_SET_GUEST_DEBUG, skipped when nothing changed since the last call."""
        wanted = (control, debugregs if type(debugregs) is tuple else tuple(debugregs))
        if wanted == self._guest_debug_last:
            return
        # KVM notes the rip a single-step starts from in this ioctl
        # (singlestep_rip in x86.c) and sets TF only while rip matches it;
        # registers still pending in the sync area would move rip after that
        # and the step would be lost on VMX/SVM (DESIGN.md, pitfalls).
        self._flush_regs()
        gd = self._guest_debug
        gd.control = control
        for i, value in enumerate(wanted[1]):
            gd.arch.debugreg[i] = value
        self.vcpu.set_guest_debug(gd)
        self._guest_debug_last = wanted

    @property
    def guest_debug_control(self) -> int:
        return self._guest_debug.control

    def deliver_breakpoint(self, pc: int, *, trapped: bool) -> None:
        """Hand the guest's own int3 at ``pc`` to its #BP handler.

        ``trapped``: KVM reported it as a #BP exit (USE_SW_BP on VMX/SVM);
        rip is at the int3, and KVM_GUESTDBG_INJECT_BP re-injects it as the
        software exception it was, so the CPU pushes ``pc + 1`` (api.rst,
        KVM_SET_GUEST_DEBUG; QEMU's gdbstub re-injects the same way).
        Otherwise the host could not execute it at all (:class:`Int3Undelivered`):
        the VMM completes it, rip past the int3 and #BP injected."""
        if trapped:
            self.regs.rip = pc
            self.mark_regs_dirty()
            control, debugregs = self._guest_debug_last or (0, (0,) * 8)
            self.set_guest_debug(
                control | abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_INJECT_BP, debugregs
            )
        else:
            self.regs.rip = pc + 1
            self.mark_regs_dirty()
            self.inject_exception(3)

    def _flush_regs(self) -> None:
        """Write registers pending in the sync area now (KVM_SET_REGS)."""
        run = self._run_page
        if run.kvm_dirty_regs & abi.KVM_SYNC_X86_REGS:
            self.vcpu.set_regs(self.regs)
            run.kvm_dirty_regs &= ~abi.KVM_SYNC_X86_REGS

    def inject_exception(self, vector: int) -> None:
        """Deliver ``vector`` to the guest's IDT on the next entry, as if its
        own code had raised it (a trap: the pushed rip is the current rip).

        ``injected`` rather than ``pending``: a pending exception is only
        honoured with KVM_CAP_EXCEPTION_PAYLOAD enabled (api.rst,
        KVM_SET_VCPU_EVENTS); measured here, pending #BP never arrived."""
        # Registers changed in the sync area must land before the event does.
        self._flush_regs()
        events = self.vcpu.get_vcpu_events()
        events.exception.injected = 1
        events.exception.pending = 0
        events.exception.nr = vector
        events.exception.has_error_code = 0
        self.vcpu.set_vcpu_events(events)

    # --- running -----------------------------------------------------------------

    def request_pause(self) -> None:
        """Stop a running guest soon (thread-safe); the run returns :class:`Paused`."""
        self._pause_requested = True
        self._kick()
        self._wakeup.set()

    def halt(self, timeout: float | None = None) -> bool:
        """The guest executed its own ``hlt``: wait, as the CPU would, until
        an interrupt can wake it (a timer tick is due) or a pause is asked.
        Returns False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._tick_due or self._pause_requested):
            self._wakeup.clear()
            if self._tick_due or self._pause_requested:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._wakeup.wait(remaining)
        return True

    def wake_from_halt(self) -> bool:
        """After :meth:`halt` returned for a tick: deliver it now, as a CPU
        leaving the halt state does, before the next instruction runs.

        An ``sti; hlt`` leaves KVM reporting the STI interrupt shadow (and
        ready_for_interrupt_injection 0) at the hlt; the hlt consumed it,
        so the shadow is cleared before the injection (api.rst,
        KVM_SET_VCPU_EVENTS, KVM_VCPUEVENT_VALID_SHADOW). Returns False if
        no tick was due or interrupts are off."""
        if not self._tick_due or not self.regs.rflags & _RFLAGS_IF:
            return False
        self._flush_regs()
        events = self.vcpu.get_vcpu_events()
        events.interrupt.shadow = 0
        events.flags = abi.KVM_VCPUEVENT_VALID_SHADOW
        self.vcpu.set_vcpu_events(events)
        self.vcpu.interrupt(layout.TIMER_VECTOR)
        self._tick_due = False
        self.injected_interrupt = True
        self._run_page.request_interrupt_window = 0
        return True

    def _kick(self) -> None:
        if self.vcpu.fd < 0:
            return  # closed: nothing runs any more
        self._run_page.immediate_exit = 1
        thread = self._vcpu_thread
        if thread is not None:
            kick.kick(thread)

    def run(self) -> MachineEvent:
        """Run until an event the debugger must see; device exits are served here."""
        event = self._run(0, ())[1]
        assert event is not None
        return event

    def step(self, count: int, stop_at: Container[int] = ()) -> tuple[int, MachineEvent | None]:
        """Up to ``count`` single-steps (KVM_GUESTDBG_SINGLESTEP must be set)
        without returning per step: a step costs one KVM_RUN.

        Returns (steps done, None) after ``count`` steps or when rip reaches
        an address in ``stop_at``; (steps done, event) for any other event,
        e.g. a debug exit that is not a plain single-step. The DR6 of the
        last step is in :attr:`last_step_dr6`.
        """
        return self._run(count, stop_at)

    def _run(self, steps: int, stop_at: Container[int]) -> tuple[int, MachineEvent | None]:
        if self.exit_code is not None:
            raise SessionStateError(f"the guest has exited (code {self.exit_code})")
        if self.vcpu.fd < 0:
            raise SessionStateError("the machine is closed")
        run = self._run_page
        regs = self.regs
        vcpu_run, check_run = self._vcpu_runner, self.vcpu.check_run
        done = 0
        self.injected_interrupt = False
        self._vcpu_thread = threading.get_ident()
        try:
            while True:
                if self._tick_due and not self.hold_interrupts:
                    self._offer_tick()
                # KVM_RUN refused with EINTR (immediate_exit, a kick before
                # entry) leaves the previous exit_reason on the run page: a
                # stale KVM_EXIT_HLT there would be served twice.
                reason = KVM_EXIT_INTR if check_run(vcpu_run()) < 0 else run.exit_reason
                if reason == KVM_EXIT_DEBUG:
                    d = self._debug_exit
                    if steps and d.dr6 & _DR6_STEP_OR_SLOT == _DR6_BS:
                        done += 1
                        self.last_step_dr6 = d.dr6
                        if done >= steps or regs.rip in stop_at:
                            return done, None
                        continue
                    return done, Debug(d.exception, d.pc, d.dr6, d.dr7)
                if reason == KVM_EXIT_HLT:
                    return done, _HLT  # a software trap's hit, or the guest's own hlt
                if reason == KVM_EXIT_MMIO and self._mmio_exit.is_write:
                    # A store to a read-only page: the page-trap hot path.
                    m = self._mmio_exit
                    if self.memory.contains(m.phys_addr, m.len):
                        return done, self._complete_store((m.phys_addr, bytes(m.data)[: m.len]))
                if reason == KVM_EXIT_IO:
                    event = self._serve_io()
                    if event is not None:
                        return done, event
                elif reason == KVM_EXIT_INTR:
                    # Clear before looking at the flag, so a pause that lands
                    # after the look still ends the next KVM_RUN.
                    run.immediate_exit = 0
                    if self._pause_requested:
                        self._pause_requested = False
                        self.console.flush()
                        return done, _PAUSED
                elif reason == KVM_EXIT_IRQ_WINDOW_OPEN:
                    run.request_interrupt_window = 0
                else:
                    return done, self._other_exit()
        finally:
            self._vcpu_thread = None

    def _complete_store(self, first: tuple[int, bytes]) -> TrappedStore:
        """Finish the storing instruction without running the next one,
        collecting its further fragments (a store across pages, a 16-byte
        SSE store in 8-byte pieces)."""
        pieces = [first]
        run = self._run_page
        vcpu_run, check_run = self._vcpu_runner, self.vcpu.check_run
        debug = None
        run.immediate_exit = 1
        try:
            while check_run(vcpu_run()) >= 0:
                reason = run.exit_reason
                if reason == KVM_EXIT_MMIO and self._mmio_exit.is_write:
                    m = self._mmio_exit
                    if not self.memory.contains(m.phys_addr, m.len):
                        raise UnexpectedExit(
                            f"guest wrote {m.len} bytes at {m.phys_addr:#x}, outside guest memory",
                            self.regs.rip)
                    pieces.append((m.phys_addr, bytes(m.data)[: m.len]))
                elif reason == KVM_EXIT_DEBUG:
                    d = self._debug_exit
                    debug = Debug(d.exception, d.pc, d.dr6, d.dr7)
                    break
                else:
                    raise UnexpectedExit(f"KVM exit {reason} while completing a store",
                                         self.regs.rip)
        finally:
            # A pause that arrived meanwhile must still end the next run.
            run.immediate_exit = 1 if self._pause_requested else 0
        return TrappedStore(tuple(pieces), debug)

    def _offer_tick(self) -> None:
        run = self._run_page
        if run.ready_for_interrupt_injection and run.if_flag:
            self.vcpu.interrupt(layout.TIMER_VECTOR)
            self.injected_interrupt = True
            self._tick_due = False
            run.request_interrupt_window = 0
        else:
            # Ask KVM to exit as soon as the guest can take an interrupt.
            run.request_interrupt_window = 1

    def _serve_io(self) -> GuestExited | None:
        exit = decode_exit(self._run_page, self._run_address)
        if isinstance(exit, IoIn):
            self._complete_io_in(exit)
            return None
        assert isinstance(exit, IoOut)
        port = exit.port
        if port == layout.PORT_SERIAL:
            self.console.write(exit.data)
        elif port == layout.PORT_EXIT:
            self.exit_code = int.from_bytes(exit.data, "little")
            self.console.flush()
            self._stop_timer()
            return GuestExited(self.exit_code)
        elif port == layout.PORT_FAULT:
            self.console.flush()
            self._raise_fault(exit.data[0])
        elif port == layout.PORT_TIMER:
            self._set_timer(int.from_bytes(exit.data, "little"))
        # Other ports read as absent hardware and ignore writes, as on a PC.
        return None

    def _complete_io_in(self, exit: IoIn) -> None:
        io = self._run_page.exit.io
        value = 0x60 if exit.port == layout.PORT_SERIAL_LSR else 0xFF
        # SAFETY: data_offset lies inside the run page (api.rst, KVM_EXIT_IO).
        ctypes.memset(self._run_address + io.data_offset, value, exit.size * io.count)

    def _raise_fault(self, vector: int) -> None:
        """The VMM's fault stub reported ``vector``: read what the CPU pushed.
        A stack that cannot be read (the fault may be its cause) still makes
        a crash, reported without the faulting rip."""
        has_code = vector in boot.ERROR_CODE_VECTORS
        frame = self.regs.rsp + (8 if has_code else 0)
        try:
            error_code = self.memory.read_u64(self.translate(self.regs.rsp)) if has_code else None
        except GuestMemoryError:
            error_code = None
        try:
            rip = self.memory.read_u64(self.translate(frame))
        except GuestMemoryError:
            rip = None
        raise GuestCrashed(vector, rip, error_code)

    def _other_exit(self) -> MachineEvent:
        exit = decode_exit(self._run_page, self._run_address)
        rip = self.regs.rip
        if isinstance(exit, (Hlt, Mmio)):
            if isinstance(exit, Mmio) and not self.memory.contains(exit.address, exit.length):
                raise UnexpectedExit(
                    f"guest {'wrote' if exit.is_write else 'read'} {exit.length} bytes at "
                    f"{exit.address:#x}, outside guest memory", rip
                )
            return exit
        self.console.flush()
        if isinstance(exit, Shutdown):
            raise GuestShutdown("guest triple-faulted (KVM_EXIT_SHUTDOWN)", rip)
        if isinstance(exit, InternalError) and self._is_int3_at(rip):
            return Int3Undelivered(rip)
        if isinstance(exit, InternalError):
            raise KvmInternalError(
                f"KVM_EXIT_INTERNAL_ERROR, suberror {exit.suberror} ({exit.description})",
                rip,
                exit.suberror,
            )
        if isinstance(exit, FailEntry):
            raise KvmInternalError(
                f"KVM_EXIT_FAIL_ENTRY, hardware reason {exit.hardware_reason:#x}", rip
            )
        assert isinstance(exit, Unsupported)
        raise UnexpectedExit(f"unexpected KVM exit {exit.reason}", rip)

    def _is_int3_at(self, rip: int) -> bool:
        try:
            return self.read_virtual(rip, 1) == b"\xcc"
        except GuestMemoryError:
            return False

    # --- timer ---------------------------------------------------------------

    def _set_timer(self, period_us: int) -> None:
        self._stop_timer()
        if period_us:
            self._timer = _Timer(self, max(period_us, 100))
            self._timer.start()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stopped.set()
            self._timer.join()
            self._timer = None
        self._tick_due = False

    @property
    def timer_running(self) -> bool:
        return self._timer is not None

    def close(self) -> None:
        """Stop the timer, free guest memory and close every fd. Idempotent."""
        self._stop_timer()
        if self.vcpu.fd < 0:
            return
        # Views into the run page must go before the page is unmapped.
        del self.regs, self._run_page, self._debug_exit, self._mmio_exit
        self.memory.close()
        self.vcpu.close()
        self.vm.close()
        self.kvm.close()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (for tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
