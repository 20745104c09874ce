"""Ordering rules the VMM keeps for KVM, checked on a recording vCPU.

These hold on every host but only matter on some (VMX/SVM lose a
single-step whose rip moved after KVM_SET_GUEST_DEBUG), so they are checked
by what the machine asks of KVM, not by running a guest.
"""

from __future__ import annotations

from kvmbench.backends.kvm import abi
from kvmbench.backends.kvm.console import Console
from kvmbench.backends.kvm.machine import Machine


class RecordingVcpu:
    """Just enough of Vcpu for Machine: a real kvm_run and a call log."""

    def __init__(self) -> None:
        self.fd = 3
        self.run_page = abi.kvm_run()
        self.calls: list[tuple[str, object]] = []

    def runner(self):  # type: ignore[no-untyped-def]
        return lambda: 0

    @staticmethod
    def check_run(result: int) -> int:
        return result

    def set_regs(self, regs: abi.kvm_regs) -> None:
        self.calls.append(("KVM_SET_REGS", regs.rip))

    def set_guest_debug(self, debug: abi.kvm_guest_debug) -> None:
        self.calls.append(("KVM_SET_GUEST_DEBUG", debug.control))

    def get_vcpu_events(self) -> abi.kvm_vcpu_events:
        return abi.kvm_vcpu_events()

    def set_vcpu_events(self, events: abi.kvm_vcpu_events) -> None:
        self.calls.append(("KVM_SET_VCPU_EVENTS", events.exception.nr))


def machine() -> tuple[Machine, RecordingVcpu]:
    vcpu = RecordingVcpu()
    return Machine(None, None, vcpu, None, Console()), vcpu  # type: ignore[arg-type]


STEP = abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP


def test_a_moved_rip_reaches_kvm_before_a_single_step_is_requested() -> None:
    m, vcpu = machine()
    m.regs.rip = 0x1234  # e.g. rewound onto a hlt trap's address
    m.mark_regs_dirty()
    m.set_guest_debug(STEP)
    assert vcpu.calls == [("KVM_SET_REGS", 0x1234), ("KVM_SET_GUEST_DEBUG", STEP)]
    assert not m._run_page.kvm_dirty_regs & abi.KVM_SYNC_X86_REGS


def test_clean_registers_cost_no_extra_ioctl() -> None:
    m, vcpu = machine()
    m.set_guest_debug(STEP)
    m.set_guest_debug(STEP)  # unchanged: no ioctl at all
    assert vcpu.calls == [("KVM_SET_GUEST_DEBUG", STEP)]


def test_an_injected_exception_sees_the_registers_set_before_it() -> None:
    m, vcpu = machine()
    m.regs.rip = 0x2001  # past a guest int3
    m.mark_regs_dirty()
    m.inject_exception(3)
    assert vcpu.calls == [("KVM_SET_REGS", 0x2001), ("KVM_SET_VCPU_EVENTS", 3)]


def test_a_trapped_guest_int3_is_reinjected_by_kvm_at_its_own_address() -> None:
    # VMX/SVM: the #BP exit leaves rip at the int3; INJECT_BP re-raises it as
    # the software exception it was, so the CPU itself pushes pc + 1.
    m, vcpu = machine()
    m.deliver_breakpoint(0x3000, trapped=True)
    assert vcpu.calls == [
        ("KVM_SET_REGS", 0x3000),
        ("KVM_SET_GUEST_DEBUG", abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_INJECT_BP),
    ]


def test_an_int3_the_host_could_not_run_is_completed_by_the_vmm() -> None:
    # kvm_pvm: the int3 never executed, so the VMM moves past it and raises #BP.
    m, vcpu = machine()
    m.deliver_breakpoint(0x3000, trapped=False)
    assert vcpu.calls == [("KVM_SET_REGS", 0x3001), ("KVM_SET_VCPU_EVENTS", 3)]
