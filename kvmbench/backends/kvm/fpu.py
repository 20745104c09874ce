"""The x87 and SSE registers as gdb names them, from KVM_GET_FPU's state.

KVM_GET_FPU returns the fxsave image's fields (api.rst, "KVM_GET_FPU";
Intel SDM vol. 1, 10.5.1 "FXSAVE Area"). gdb's ``i386:x86-64`` description
(its core and sse features) wants them in other forms: ``ftag`` is the full
16-bit tag word, not fxsave's abridged byte, so each register's tag is
worked out from its contents as FSTENV would store it (SDM vol. 1, 8.1.7);
``fiseg``/``foseg`` are the upper halves of the 64-bit instruction and
operand pointers, ``fioff``/``fooff`` the lower ones, as gdb's amd64
fxsave reader splits them.
"""

from __future__ import annotations

from kvmbench.backends.kvm import abi

X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
#: The names :func:`fpu_register` answers.
FPU_REGISTERS: frozenset[str] = frozenset(
    (*(f"st{i}" for i in range(8)), *X87_CONTROL, *(f"xmm{i}" for i in range(16)), "mxcsr"))

# Full tag word values (SDM vol. 1, figure 8-7).
_VALID, _ZERO, _SPECIAL, _EMPTY = 0b00, 0b01, 0b10, 0b11


def _tag(value: bytes) -> int:
    """The tag of a non-empty 80-bit register: valid, zero or special."""
    significand = int.from_bytes(value[:8], "little")
    exponent = int.from_bytes(value[8:10], "little") & 0x7FFF
    if exponent == 0x7FFF:
        return _SPECIAL  # infinity or NaN
    if exponent == 0:
        return _ZERO if significand == 0 else _SPECIAL  # zero, or denormal
    return _VALID if significand >> 63 else _SPECIAL  # unnormal without the integer bit


def full_tag_word(fpu: abi.kvm_fpu) -> int:
    """The 16-bit x87 tag word from fxsave's abridged tag byte, physical
    register i in bits 2i+1..2i. ``fpr`` holds ST(0)..ST(7); physical
    register i is ST((i - TOP) mod 8)."""
    top = (fpu.fsw >> 11) & 7
    word = 0
    for physical in range(8):
        if not fpu.ftwx >> physical & 1:
            tag = _EMPTY
        else:
            tag = _tag(bytes(fpu.fpr[(physical - top) % 8])[:10])
        word |= tag << (2 * physical)
    return word


def fpu_register(fpu: abi.kvm_fpu, name: str) -> int:
    """Register ``name`` (one of :data:`FPU_REGISTERS`) as an unsigned number."""
    if name.startswith("st"):
        return int.from_bytes(bytes(fpu.fpr[int(name[2:])])[:10], "little")
    if name.startswith("xmm"):
        return int.from_bytes(bytes(fpu.xmm[int(name[3:])]), "little")
    values = {
        "fctrl": fpu.fcw, "fstat": fpu.fsw, "ftag": full_tag_word(fpu),
        "fiseg": fpu.last_ip >> 32, "fioff": fpu.last_ip & 0xFFFFFFFF,
        "foseg": fpu.last_dp >> 32, "fooff": fpu.last_dp & 0xFFFFFFFF,
        "fop": fpu.last_opcode & 0x7FF, "mxcsr": fpu.mxcsr,
    }  # fmt: skip
    if name not in values:
        raise KeyError(name)
    return int(values[name])
