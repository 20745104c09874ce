"""KVM ioctl request numbers, computed from the structs like <linux/ioctl.h>.

Each entry notes the capability that guarantees it (api.rst, section 4).
"""

from __future__ import annotations

import ctypes

from kvmbench.backends.kvm import abi

_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (KVMIO << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (
        size << _IOC_SIZESHIFT
    )


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


def _iow(nr: int, struct: type) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def _iowr(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


# The cpuid2 ioctls are declared with the header-only struct size.
class _kvm_cpuid2_header(ctypes.Structure):
    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


class _kvm_msrs_header(ctypes.Structure):
    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


# /dev/kvm
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, _kvm_cpuid2_header)  # KVM_CAP_EXT_CPUID
# vm fd
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, abi.kvm_userspace_memory_region)  # KVM_CAP_USER_MEMORY
KVM_SET_TSS_ADDR = _io(0x47)  # KVM_CAP_SET_TSS_ADDR
# vcpu fd
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, abi.kvm_regs)
KVM_SET_REGS = _iow(0x82, abi.kvm_regs)
KVM_GET_SREGS = _ior(0x83, abi.kvm_sregs)
KVM_SET_SREGS = _iow(0x84, abi.kvm_sregs)
KVM_TRANSLATE = _iowr(0x85, abi.kvm_translation)
KVM_INTERRUPT = _iow(0x86, abi.kvm_interrupt)  # needs no in-kernel irqchip
KVM_SET_CPUID2 = _iow(0x90, _kvm_cpuid2_header)  # KVM_CAP_EXT_CPUID
KVM_SET_GUEST_DEBUG = _iow(0x9B, abi.kvm_guest_debug)  # KVM_CAP_SET_GUEST_DEBUG
KVM_GET_FPU = _ior(0x8C, abi.kvm_fpu)
KVM_GET_MSRS = _iowr(0x88, _kvm_msrs_header)
KVM_GET_TSC_KHZ = _io(0xA3)  # KVM_CAP_GET_TSC_KHZ
KVM_GET_VCPU_EVENTS = _ior(0x9F, abi.kvm_vcpu_events)  # KVM_CAP_VCPU_EVENTS
KVM_SET_VCPU_EVENTS = _iow(0xA0, abi.kvm_vcpu_events)  # KVM_CAP_VCPU_EVENTS
