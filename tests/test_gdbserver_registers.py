"""The x87/SSE registers the server shows gdb: KVM_GET_FPU's struct against
the kernel header, the tag word rebuilt as FSTENV would store it, and the
server's register replies against the session's own reads."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from kvmbench.backends.kvm import abi, ioctls
from kvmbench.backends.kvm.fpu import full_tag_word
from kvmbench.gdbserver.registers import G_REGISTERS, LAYOUT
from kvmbench.gdbserver.stub import GdbStub
from kvmbench.rsp.hexdata import from_hex


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_kvm_fpu_matches_the_kernel_header(tmp_path) -> None:
    src = tmp_path / "fpu.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\n"
                   "int main(void) { printf(\"%zu %zu %zu %lu\\n\", sizeof(struct kvm_fpu), "
                   "offsetof(struct kvm_fpu, xmm), offsetof(struct kvm_fpu, mxcsr), "
                   "(unsigned long)KVM_GET_FPU); return 0; }\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "fpu"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "fpu")], capture_output=True, text=True, check=True).stdout
    assert [int(v) for v in out.split()] == [ctypes.sizeof(abi.kvm_fpu), abi.kvm_fpu.xmm.offset,
                                             abi.kvm_fpu.mxcsr.offset, ioctls.KVM_GET_FPU]


def _fpu(top: int, abridged: int, values: dict[int, bytes]) -> abi.kvm_fpu:
    fpu = abi.kvm_fpu()
    fpu.fsw = top << 11
    fpu.ftwx = abridged
    for st, raw in values.items():
        fpu.fpr[st][:10] = list(raw)
    return fpu


ONE = (1 << 63).to_bytes(8, "little") + (0x3FFF).to_bytes(2, "little")  # 1.0
ZERO = bytes(10)
INFINITY = (1 << 63).to_bytes(8, "little") + (0x7FFF).to_bytes(2, "little")


def test_empty_registers_tag_as_empty() -> None:
    assert full_tag_word(_fpu(0, 0, {})) == 0xFFFF


def test_tags_follow_the_physical_registers_from_top() -> None:
    # TOP = 6: ST(0) is physical 6 (valid 1.0), ST(1) physical 7 (zero), ST(2) physical 0 (inf)
    fpu = _fpu(6, 0b1100_0001, {0: ONE, 1: ZERO, 2: INFINITY})
    word = full_tag_word(fpu)
    assert (word >> 12) & 3 == 0b00  # physical 6: valid
    assert (word >> 14) & 3 == 0b01  # physical 7: zero
    assert word & 3 == 0b10          # physical 0: special
    assert (word >> 2) & 0xFF == 0xFF  # physical 1..4 empty


def test_g_carries_the_general_registers_and_p_the_rest(open_guest) -> None:
    session = open_guest("fib", [5])
    stub = GdbStub(session)
    g = from_hex(stub.handle(b"g"))
    assert len(g) == sum(r.size for r in G_REGISTERS)
    regs = session.regs.snapshot()
    offset = 0
    for reg in G_REGISTERS:
        value = int.from_bytes(g[offset:offset + reg.size], "little")
        expected = regs.get(reg.name, regs["rflags"] if reg.name == "eflags" else None)
        if expected is None:
            expected = session.regs[reg.name]
        assert value == expected, reg.name
        offset += reg.size
    for name in ("st0", "fctrl", "ftag", "xmm3", "mxcsr", "fs_base", "gs_base"):
        reg = LAYOUT.get(name)
        value = int.from_bytes(from_hex(stub.handle(b"p%x" % reg.regnum)), "little")
        assert value == session.target.read_register(name), name
    assert stub.handle(b"P%x=%s" % (LAYOUT.get("cs").regnum, b"00000000")).startswith(b"E")
