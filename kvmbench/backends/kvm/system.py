"""Thin wrappers over the three KVM file descriptors: /dev/kvm, a VM, a vCPU.

Method names are the ioctl names (api.rst, section 4). Every method has the
same body: call, check, raise :class:`~kvmbench.errors.KvmError` naming the
ioctl. ioctls go through ctypes' libc ``ioctl`` rather than ``fcntl.ioctl``:
from Python 3.14 ``fcntl.ioctl`` retries on EINTR, and then a signal could no
longer kick a vCPU out of KVM_RUN. ctypes also releases the GIL for the call,
so other threads run while the guest does.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
from collections.abc import Callable

from kvmbench.backends.kvm import abi, ioctls
from kvmbench.errors import HostUnsupported, KvmError

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int

KVM_DEVICE = "/dev/kvm"


def _address_of(mapping: mmap.mmap) -> int:
    """The address of an mmap, without leaving an export that pins it."""
    anchor = ctypes.c_char.from_buffer(mapping)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def _check(result: int, name: str) -> int:
    if result < 0:
        raise KvmError(ctypes.get_errno(), name)
    return result


class _Fd:
    """An owned file descriptor, closed explicitly (never in ``__del__``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _call(self, request: int, arg: object, name: str) -> int:
        return _check(_ioctl(self.fd, request, arg), name)


class Kvm(_Fd):
    """The /dev/kvm system fd."""

    @classmethod
    def open(cls, path: str = KVM_DEVICE) -> "Kvm":
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HostUnsupported(f"{path} does not exist: this host has no KVM") from None
        except PermissionError:
            raise HostUnsupported(f"no permission to open {path} (add yourself to group kvm)") from None
        kvm = cls(fd)
        version = kvm.get_api_version()
        if version != abi.KVM_API_VERSION:
            kvm.close()
            raise HostUnsupported(f"KVM API version {version}, expected {abi.KVM_API_VERSION}")
        return kvm

    def get_api_version(self) -> int:
        return self._call(ioctls.KVM_GET_API_VERSION, None, "KVM_GET_API_VERSION")

    def check_extension(self, cap: int) -> int:
        return self._call(ioctls.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def get_vcpu_mmap_size(self) -> int:
        return self._call(ioctls.KVM_GET_VCPU_MMAP_SIZE, None, "KVM_GET_VCPU_MMAP_SIZE")

    def get_supported_cpuid(self) -> abi.kvm_cpuid2:
        cpuid = abi.kvm_cpuid2(nent=abi.KVM_MAX_CPUID_ENTRIES)
        self._call(ioctls.KVM_GET_SUPPORTED_CPUID, ctypes.byref(cpuid), "KVM_GET_SUPPORTED_CPUID")
        return cpuid

    def create_vm(self) -> "Vm":
        return Vm(self._call(ioctls.KVM_CREATE_VM, 0, "KVM_CREATE_VM"), self)


class Vm(_Fd):
    """A VM fd."""

    def __init__(self, fd: int, kvm: Kvm) -> None:
        super().__init__(fd)
        self.kvm = kvm

    def check_extension(self, cap: int) -> int:
        return self._call(ioctls.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def set_user_memory_region(self, region: abi.kvm_userspace_memory_region) -> None:
        self._call(ioctls.KVM_SET_USER_MEMORY_REGION, ctypes.byref(region), "KVM_SET_USER_MEMORY_REGION")

    def set_tss_addr(self, address: int) -> None:
        self._call(ioctls.KVM_SET_TSS_ADDR, address, "KVM_SET_TSS_ADDR")

    def create_vcpu(self, index: int = 0) -> "Vcpu":
        fd = self._call(ioctls.KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")
        return Vcpu(fd, self.kvm.get_vcpu_mmap_size())


class Vcpu(_Fd):
    """A vCPU fd and its shared ``kvm_run`` page."""

    def __init__(self, fd: int, mmap_size: int) -> None:
        super().__init__(fd)
        self._run_map = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # SAFETY: the mapping is at least sizeof(kvm_run) (KVM_GET_VCPU_MMAP_SIZE).
        # The view is made from the address, not the buffer, so a traceback
        # that still holds it cannot keep close() from unmapping; nothing
        # reads through it after close() (the Machine drops its references).
        self.run_page: abi.kvm_run = abi.kvm_run.from_address(_address_of(self._run_map))

    def close(self) -> None:
        if self.fd >= 0:
            self._run_map.close()
        super().close()

    def run(self) -> int:
        """KVM_RUN; returns 0, or -1 with EINTR when a signal kicked the vCPU out."""
        return self.check_run(_ioctl(self.fd, ioctls.KVM_RUN, None))

    def runner(self) -> Callable[[], int]:
        """KVM_RUN as a bare callable for a run loop (one Python frame less a
        call, which a single-step loop notices); pass its result through
        :meth:`check_run`. Valid until :meth:`close`."""
        return functools.partial(_ioctl, self.fd, ioctls.KVM_RUN, None)

    @staticmethod
    def check_run(result: int) -> int:
        """KVM_RUN's result: 0, or -1 for EINTR (exit KVM_EXIT_INTR); raises otherwise."""
        if result < 0:
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise KvmError(err, "KVM_RUN")
        return result

    def get_regs(self) -> abi.kvm_regs:
        regs = abi.kvm_regs()
        self._call(ioctls.KVM_GET_REGS, ctypes.byref(regs), "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: abi.kvm_regs) -> None:
        self._call(ioctls.KVM_SET_REGS, ctypes.byref(regs), "KVM_SET_REGS")

    def get_sregs(self) -> abi.kvm_sregs:
        sregs = abi.kvm_sregs()
        self._call(ioctls.KVM_GET_SREGS, ctypes.byref(sregs), "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: abi.kvm_sregs) -> None:
        self._call(ioctls.KVM_SET_SREGS, ctypes.byref(sregs), "KVM_SET_SREGS")

    def get_fpu(self) -> abi.kvm_fpu:
        fpu = abi.kvm_fpu()
        self._call(ioctls.KVM_GET_FPU, ctypes.byref(fpu), "KVM_GET_FPU")
        return fpu

    def get_msr(self, index: int) -> int:
        """One MSR's value by KVM_GET_MSRS (which returns how many it read)."""
        msrs = abi.kvm_msrs(nmsrs=1)
        msrs.entries[0].index = index
        if self._call(ioctls.KVM_GET_MSRS, ctypes.byref(msrs), "KVM_GET_MSRS") != 1:
            raise KvmError(errno.EINVAL, f"KVM_GET_MSRS ({index:#x})")
        return int(msrs.entries[0].data)

    def get_tsc_khz(self) -> int:
        """The guest's TSC frequency in kHz (KVM_GET_TSC_KHZ returns it)."""
        return self._call(ioctls.KVM_GET_TSC_KHZ, None, "KVM_GET_TSC_KHZ")

    def set_cpuid2(self, cpuid: abi.kvm_cpuid2) -> None:
        self._call(ioctls.KVM_SET_CPUID2, ctypes.byref(cpuid), "KVM_SET_CPUID2")

    def set_guest_debug(self, debug: abi.kvm_guest_debug) -> None:
        self._call(ioctls.KVM_SET_GUEST_DEBUG, ctypes.byref(debug), "KVM_SET_GUEST_DEBUG")

    def translate(self, linear_address: int) -> abi.kvm_translation:
        tr = abi.kvm_translation(linear_address=linear_address)
        self._call(ioctls.KVM_TRANSLATE, ctypes.byref(tr), "KVM_TRANSLATE")
        return tr

    def interrupt(self, vector: int) -> None:
        irq = abi.kvm_interrupt(irq=vector)
        self._call(ioctls.KVM_INTERRUPT, ctypes.byref(irq), "KVM_INTERRUPT")

    def get_vcpu_events(self) -> abi.kvm_vcpu_events:
        events = abi.kvm_vcpu_events()
        self._call(ioctls.KVM_GET_VCPU_EVENTS, ctypes.byref(events), "KVM_GET_VCPU_EVENTS")
        return events

    def set_vcpu_events(self, events: abi.kvm_vcpu_events) -> None:
        self._call(ioctls.KVM_SET_VCPU_EVENTS, ctypes.byref(events), "KVM_SET_VCPU_EVENTS")
