"""Register layouts: which registers a target has, their numbers and sizes,
and where each one sits in the ``g`` packet.

A layout comes from a target description (:mod:`kvmbench.rsp.target_xml`)
or, for a target this side describes itself, from :func:`x86_64_layout`:
gdb's ``i386:x86-64`` registers in gdb's order and sizes (GDB manual,
"i386 Features"; gdb's own numbering as ``maint print remote-registers``
shows it). Register numbers are the target description's: the numbers of
``p``/``P`` and of expedited registers in stop replies. The ``g`` packet
holds every register in number order, each in target byte order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kvmbench.errors import RspError

CORE_FEATURE = "org.gnu.gdb.i386.core"
SSE_FEATURE = "org.gnu.gdb.i386.sse"
SEGMENTS_FEATURE = "org.gnu.gdb.i386.segments"
X86_64_ARCHITECTURE = "i386:x86-64"


@dataclass(frozen=True, slots=True)
class Register:
    """One register: ``name``, ``bitsize``, its number ``regnum``, gdb's
    ``type`` name, register ``group`` (None: gdb's default) and the
    ``feature`` that describes it."""

    name: str
    bitsize: int
    regnum: int
    type: str = "int"
    group: str | None = None
    feature: str = ""

    @property
    def size(self) -> int:
        """Bytes in the ``g`` packet and in ``p`` replies."""
        return (self.bitsize + 7) // 8


@dataclass(frozen=True)
class RegisterLayout:
    """The registers of one target, in number order."""

    registers: tuple[Register, ...]
    architecture: str | None = None
    _by_name: dict[str, Register] = field(init=False, repr=False, compare=False)
    _by_number: dict[int, Register] = field(init=False, repr=False, compare=False)
    _offsets: dict[str, int] = field(init=False, repr=False, compare=False)
    #: (name, offset, size) of every register in the ``g`` data, in order.
    spans: tuple[tuple[str, int, int], ...] = field(init=False, repr=False, compare=False)
    #: Bytes of register data in a complete ``g`` reply.
    g_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.registers, key=lambda r: r.regnum))
        by_name: dict[str, Register] = {}
        by_number: dict[int, Register] = {}
        offsets: dict[str, int] = {}
        offset = 0
        for reg in ordered:
            if reg.name in by_name:
                raise RspError(f"register {reg.name!r} is described twice")
            if reg.regnum in by_number:
                raise RspError(f"registers {by_number[reg.regnum].name!r} and {reg.name!r} share number {reg.regnum}")
            if reg.bitsize <= 0 or reg.regnum < 0:
                raise RspError(f"register {reg.name!r} has bitsize {reg.bitsize} and number {reg.regnum}")
            by_name[reg.name] = by_number[reg.regnum] = reg
            offsets[reg.name] = offset
            offset += reg.size
        object.__setattr__(self, "registers", ordered)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_number", by_number)
        object.__setattr__(self, "_offsets", offsets)
        object.__setattr__(self, "spans", tuple((r.name, offsets[r.name], r.size) for r in ordered))
        object.__setattr__(self, "g_size", offset)

    def by_name(self, name: str) -> Register | None:
        return self._by_name.get(name)

    def by_number(self, regnum: int) -> Register | None:
        return self._by_number.get(regnum)

    def get(self, name: str) -> Register:
        """The register called ``name``; :class:`RspError` if there is none."""
        reg = self._by_name.get(name)
        if reg is None:
            raise RspError(f"the target has no register {name!r}")
        return reg

    def g_offset(self, name: str) -> int:
        """Byte offset of ``name`` in the ``g`` packet's data."""
        self.get(name)
        return self._offsets[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.registers)

    @property
    def features(self) -> tuple[str, ...]:
        """The features that describe the registers, in order of first use."""
        return tuple(dict.fromkeys(r.feature for r in self.registers))


def _numbered(first: int, feature: str, specs: Iterable[tuple[str, int, str, str | None]]) -> list[Register]:
    return [Register(name, bits, first + i, type_, group, feature) for i, (name, bits, type_, group) in enumerate(specs)]


def x86_64_layout(*, sse: bool = True, segments: bool = True) -> RegisterLayout:
    """gdb's ``i386:x86-64`` registers: the core feature (general registers,
    rip, eflags, the selectors, the x87 registers), optionally the SSE
    feature (xmm0-15, mxcsr) and the segments feature (fs_base, gs_base),
    numbered on in that order."""
    general = [(name, 64, "int64", None) for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")]
    general += [("rbp", 64, "data_ptr", None), ("rsp", 64, "data_ptr", None)]
    general += [(f"r{i}", 64, "int64", None) for i in range(8, 16)]
    general += [("rip", 64, "code_ptr", None), ("eflags", 32, "i386_eflags", None)]
    general += [(name, 32, "int32", None) for name in ("cs", "ss", "ds", "es", "fs", "gs")]
    general += [(f"st{i}", 80, "i387_ext", None) for i in range(8)]
    general += [
        (name, 32, "int", "float")
        for name in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
    ]
    registers = _numbered(0, CORE_FEATURE, general)
    if sse:
        vector = [(f"xmm{i}", 128, "vec128", None) for i in range(16)]
        vector.append(("mxcsr", 32, "i386_mxcsr", "vector"))
        registers += _numbered(len(registers), SSE_FEATURE, vector)
    if segments:
        bases = [("fs_base", 64, "int", None), ("gs_base", 64, "int", None)]
        registers += _numbered(len(registers), SEGMENTS_FEATURE, bases)
    return RegisterLayout(tuple(registers), X86_64_ARCHITECTURE)


#: The full x86-64 layout: core, SSE and segment bases.
X86_64 = x86_64_layout()
