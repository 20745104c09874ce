"""Raw KVM ABI for x86-64: ctypes mirrors of the uapi structs, nothing else.

Names follow the kernel (include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h). Sizes and offsets are checked against the
installed headers by tests/test_kvm_abi.py.
"""

from __future__ import annotations

import ctypes

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

# --- constants (linux/kvm.h, asm/kvm.h) ---------------------------------------

KVM_API_VERSION = 12

KVM_MEM_READONLY = 1 << 1

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000
KVM_GUESTDBG_INJECT_DB = 0x00040000
KVM_GUESTDBG_INJECT_BP = 0x00080000
KVM_GUESTDBG_BLOCKIRQ = 0x00100000

KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

KVM_VCPUEVENT_VALID_SHADOW = 0x00000004
KVM_VCPUEVENT_VALID_PAYLOAD = 0x00000010

KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_SYNC_REGS = 74
KVM_CAP_READONLY_MEM = 81
KVM_CAP_GUEST_DEBUG_HW_BPS = 119
KVM_CAP_GUEST_DEBUG_HW_WPS = 120
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_EXCEPTION_PAYLOAD = 164
KVM_CAP_SET_GUEST_DEBUG2 = 195
KVM_CAP_GET_TSC_KHZ = 61

#: The time-stamp counter (SDM vol. 4, table 2-2: IA32_TIME_STAMP_COUNTER).
MSR_IA32_TSC = 0x10

KVM_NR_INTERRUPTS = 256
KVM_MAX_CPUID_ENTRIES = 256


# --- structs -------------------------------------------------------------------


class kvm_regs(ctypes.Structure):
    _fields_ = [
        (name, u64)
        for name in (
            "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags"
        ).split()
    ]


class kvm_segment(ctypes.Structure):
    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class kvm_sregs(ctypes.Structure):
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class _events_exception(ctypes.Structure):
    _fields_ = [
        ("injected", u8),
        ("nr", u8),
        ("has_error_code", u8),
        ("pending", u8),
        ("error_code", u32),
    ]


class _events_interrupt(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class _events_nmi(ctypes.Structure):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class _events_smi(ctypes.Structure):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8)]


class kvm_vcpu_events(ctypes.Structure):
    _fields_ = [
        ("exception", _events_exception),
        ("interrupt", _events_interrupt),
        ("nmi", _events_nmi),
        ("sipi_vector", u32),
        ("flags", u32),
        ("smi", _events_smi),
        ("triple_fault_pending", u8),
        ("reserved", u8 * 26),
        ("exception_has_payload", u8),
        ("exception_payload", u64),
    ]


class kvm_fpu(ctypes.Structure):
    """KVM_GET_FPU's x87 and SSE state (uapi asm/kvm.h, 416 bytes): the
    fxsave image's fields, ``fpr`` in ST(0)..ST(7) order, ``ftwx`` the
    abridged tag byte (Intel SDM vol. 1, 10.5.1)."""

    _fields_ = [
        ("fpr", (u8 * 16) * 8),
        ("fcw", u16),
        ("fsw", u16),
        ("ftwx", u8),
        ("pad1", u8),
        ("last_opcode", u16),
        ("last_ip", u64),
        ("last_dp", u64),
        ("xmm", (u8 * 16) * 16),
        ("mxcsr", u32),
        ("pad2", u32),
    ]


class kvm_sync_regs(ctypes.Structure):
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class kvm_msr_entry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(ctypes.Structure):
    """KVM_GET_MSRS's header and one entry (the kernel reads ``nmsrs``);
    the ioctl is declared with the header-only size, as the cpuid2 ones."""

    _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * 1)]


class kvm_guest_debug_arch(ctypes.Structure):
    _fields_ = [("debugreg", u64 * 8)]


class kvm_guest_debug(ctypes.Structure):
    _fields_ = [("control", u32), ("pad", u32), ("arch", kvm_guest_debug_arch)]


class kvm_translation(ctypes.Structure):
    _fields_ = [
        ("linear_address", u64),
        ("physical_address", u64),
        ("valid", u8),
        ("writeable", u8),
        ("usermode", u8),
        ("pad", u8 * 5),
    ]


class kvm_interrupt(ctypes.Structure):
    _fields_ = [("irq", u32)]


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """Header plus a fixed array big enough for any host (the kernel reads nent)."""

    _fields_ = [
        ("nent", u32),
        ("padding", u32),
        ("entries", kvm_cpuid_entry2 * KVM_MAX_CPUID_ENTRIES),
    ]


# --- struct kvm_run's exit payloads (the anonymous union) ---------------------


class kvm_run_io(ctypes.Structure):
    _fields_ = [
        ("direction", u8),
        ("size", u8),
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),
    ]


class kvm_debug_exit_arch(ctypes.Structure):
    _fields_ = [("exception", u32), ("pad", u32), ("pc", u64), ("dr6", u64), ("dr7", u64)]


class kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("hw_exit_reason", u64),
        ("fail_entry", kvm_run_fail_entry),
        ("io", kvm_run_io),
        ("debug", kvm_debug_exit_arch),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run_s(ctypes.Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", ctypes.c_char * 2048)]


class kvm_run(ctypes.Structure):
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", kvm_run_s),
    ]
