"""The ctypes mirrors match the kernel headers installed on this machine."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from kvmbench.backends.kvm import abi, ioctls

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")

# (C expression, our value) pairs.
CHECKS: list[tuple[str, int]] = [
    ("sizeof(struct kvm_regs)", ctypes.sizeof(abi.kvm_regs)),
    ("offsetof(struct kvm_regs, rip)", abi.kvm_regs.rip.offset),
    ("offsetof(struct kvm_regs, rflags)", abi.kvm_regs.rflags.offset),
    ("sizeof(struct kvm_segment)", ctypes.sizeof(abi.kvm_segment)),
    ("sizeof(struct kvm_sregs)", ctypes.sizeof(abi.kvm_sregs)),
    ("offsetof(struct kvm_sregs, cr0)", abi.kvm_sregs.cr0.offset),
    ("offsetof(struct kvm_sregs, efer)", abi.kvm_sregs.efer.offset),
    ("sizeof(struct kvm_vcpu_events)", ctypes.sizeof(abi.kvm_vcpu_events)),
    ("offsetof(struct kvm_vcpu_events, flags)", abi.kvm_vcpu_events.flags.offset),
    ("KVM_VCPUEVENT_VALID_SHADOW", abi.KVM_VCPUEVENT_VALID_SHADOW),
    (
        "offsetof(struct kvm_vcpu_events, exception_payload)",
        abi.kvm_vcpu_events.exception_payload.offset,
    ),
    ("sizeof(struct kvm_sync_regs)", ctypes.sizeof(abi.kvm_sync_regs)),
    ("sizeof(struct kvm_userspace_memory_region)", ctypes.sizeof(abi.kvm_userspace_memory_region)),
    ("sizeof(struct kvm_guest_debug)", ctypes.sizeof(abi.kvm_guest_debug)),
    ("sizeof(struct kvm_translation)", ctypes.sizeof(abi.kvm_translation)),
    ("sizeof(struct kvm_cpuid_entry2)", ctypes.sizeof(abi.kvm_cpuid_entry2)),
    ("offsetof(struct kvm_run, exit_reason)", abi.kvm_run.exit_reason.offset),
    ("offsetof(struct kvm_run, io)", abi.kvm_run.exit.offset),
    ("offsetof(struct kvm_run, kvm_valid_regs)", abi.kvm_run.kvm_valid_regs.offset),
    ("offsetof(struct kvm_run, kvm_dirty_regs)", abi.kvm_run.kvm_dirty_regs.offset),
    ("offsetof(struct kvm_run, s)", abi.kvm_run.s.offset),
    ("offsetof(struct kvm_run, mmio.len)", abi.kvm_run.exit.offset + abi.kvm_run_mmio.len.offset),
    ("offsetof(struct kvm_run, debug.arch.dr6)", abi.kvm_run.exit.offset + abi.kvm_debug_exit_arch.dr6.offset),
    ("offsetof(struct kvm_run, internal.data)", abi.kvm_run.exit.offset + abi.kvm_run_internal.data.offset),
    ("KVM_RUN", ioctls.KVM_RUN),
    ("KVM_GET_REGS", ioctls.KVM_GET_REGS),
    ("KVM_SET_SREGS", ioctls.KVM_SET_SREGS),
    ("KVM_SET_USER_MEMORY_REGION", ioctls.KVM_SET_USER_MEMORY_REGION),
    ("KVM_SET_GUEST_DEBUG", ioctls.KVM_SET_GUEST_DEBUG),
    ("KVM_TRANSLATE", ioctls.KVM_TRANSLATE),
    ("KVM_INTERRUPT", ioctls.KVM_INTERRUPT),
    ("KVM_SET_CPUID2", ioctls.KVM_SET_CPUID2),
    ("KVM_GET_SUPPORTED_CPUID", ioctls.KVM_GET_SUPPORTED_CPUID),
    ("KVM_GET_VCPU_EVENTS", ioctls.KVM_GET_VCPU_EVENTS),
    ("KVM_SET_VCPU_EVENTS", ioctls.KVM_SET_VCPU_EVENTS),
    ("KVM_CREATE_VM", ioctls.KVM_CREATE_VM),
    ("KVM_GUESTDBG_BLOCKIRQ", abi.KVM_GUESTDBG_BLOCKIRQ),
    ("KVM_CAP_SET_GUEST_DEBUG2", abi.KVM_CAP_SET_GUEST_DEBUG2),
    ("KVM_CAP_GET_TSC_KHZ", abi.KVM_CAP_GET_TSC_KHZ),
    ("KVM_GET_MSRS", ioctls.KVM_GET_MSRS),
    ("KVM_GET_TSC_KHZ", ioctls.KVM_GET_TSC_KHZ),
    ("sizeof(struct kvm_msr_entry)", ctypes.sizeof(abi.kvm_msr_entry)),
    ("offsetof(struct kvm_msrs, entries)", abi.kvm_msrs.entries.offset),
]


@pytest.fixture(scope="module")
def header_values(tmp_path_factory: pytest.TempPathFactory) -> list[int]:
    src = tmp_path_factory.mktemp("abi") / "abi.c"
    body = "\n".join(f'    printf("%llu\\n", (unsigned long long)({expr}));' for expr, _ in CHECKS)
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\n"
        f"int main(void) {{\n{body}\n    return 0;\n}}\n"
    )
    exe = src.with_suffix("")
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[expr for expr, _ in CHECKS])
def test_matches_kernel_header(header_values: list[int], index: int) -> None:
    assert CHECKS[index][1] == header_values[index]
