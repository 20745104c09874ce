"""What the symbol libraries evaluate against: one frame's registers and memory.

:class:`FrameContext` is the only thing the unwinder, the DWARF location
evaluator and the C expression evaluator know about a target. The engine
passes a live frame (a stopped vCPU's registers and the guest's memory);
tests and static commands (``p counter`` before the guest runs, as ``gdb
ELF`` does without a process) pass a :class:`StaticFrame` over an
:class:`ImageMemory` made from the ELF's load segments.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from kvmbench.errors import GuestMemoryError, RegisterUnavailable


@runtime_checkable
class FrameContext(Protocol):
    """One frame's view of a target: registers by gdb name, and memory.

    Registers are named as gdb names them on x86-64 (``rax`` ... ``r15``,
    ``rip``, ``rsp``, ``rbp``, ``eflags``, ``cs`` ... ``gs``, ``fs_base``,
    ``gs_base``; ``xmm0``... as 128-bit integers where the target has
    them) and read as unsigned integers. In a caller's frame (see
    :class:`kvmbench.symbols.unwind.Unwinder`) they are the values the
    caller will see when the call returns.

    ``read_register`` raises :class:`~kvmbench.errors.RegisterUnavailable`
    for a register the frame cannot supply; ``read_memory`` and
    ``write_memory`` raise :class:`~kvmbench.errors.GuestMemoryError` for
    addresses that are not readable or writable. Memory reads return
    exactly ``length`` bytes.
    """

    def read_register(self, name: str) -> int:
        """The value of register ``name`` in this frame."""
        ...

    def write_register(self, name: str, value: int) -> None:
        """Set register ``name`` in this frame (``p $rax = 5``, ``set var`` of a register variable)."""
        ...

    def read_memory(self, address: int, length: int) -> bytes:
        """``length`` bytes at virtual ``address``."""
        ...

    def write_memory(self, address: int, data: bytes) -> None:
        """Store ``data`` at virtual ``address``."""
        ...


class ImageMemory:
    """Byte-addressed memory made of regions, such as an ELF's load segments.

    Writable, like a core file's snapshot in a debugger: ``set var`` on a
    static image changes this copy only. Regions never overlap; a region
    added over an existing one is refused.
    """

    def __init__(self, regions: Iterable[tuple[int, bytes | bytearray]] = ()) -> None:
        """Start with ``(address, bytes)`` regions."""
        self._starts: list[int] = []
        self._regions: list[bytearray] = []
        for address, data in regions:
            self.add_region(address, data)

    @classmethod
    def from_segments(cls, segments: Iterable[tuple[int, int, bytes, int, int]]) -> ImageMemory:
        """Memory as a loader lays out ``LoadSegment``s: data, then zeros to memsz (.bss)."""
        memory = cls()
        for _paddr, vaddr, data, memsz, _flags in segments:
            if memsz:
                memory.add_region(vaddr, bytes(data) + bytes(max(memsz - len(data), 0)))
        return memory

    def add_region(self, address: int, data: bytes | bytearray) -> None:
        """Add ``data`` at ``address`` (a stack snapshot, a segment)."""
        if not data:
            return
        i = bisect.bisect_right(self._starts, address)
        end = address + len(data)
        if i > 0 and self._starts[i - 1] + len(self._regions[i - 1]) > address:
            raise ValueError(f"region at {address:#x} overlaps the one at {self._starts[i - 1]:#x}")
        if i < len(self._starts) and self._starts[i] < end:
            raise ValueError(f"region at {address:#x} overlaps the one at {self._starts[i]:#x}")
        self._starts.insert(i, address)
        self._regions.insert(i, bytearray(data))

    def read_memory(self, address: int, length: int) -> bytes:
        """``length`` bytes at ``address``; GuestMemoryError past the regions."""
        out = bytearray()
        for region, offset, count in self._pieces(address, length):
            out += region[offset:offset + count]
        return bytes(out)

    def write_memory(self, address: int, data: bytes) -> None:
        """Store ``data`` at ``address``; GuestMemoryError past the regions."""
        pieces = list(self._pieces(address, len(data)))
        done = 0
        for region, offset, count in pieces:
            region[offset:offset + count] = data[done:done + count]
            done += count

    def _pieces(self, address: int, length: int) -> Iterable[tuple[bytearray, int, int]]:
        if address < 0:
            raise GuestMemoryError(f"Cannot access memory at address {address:#x}")
        pieces = []
        at, left = address, length
        while left > 0:
            i = bisect.bisect_right(self._starts, at) - 1
            if i < 0 or at >= self._starts[i] + len(self._regions[i]):
                # gdb's wording, with the first address that failed.
                raise GuestMemoryError(f"Cannot access memory at address {at:#x}")
            offset = at - self._starts[i]
            count = min(left, len(self._regions[i]) - offset)
            pieces.append((self._regions[i], offset, count))
            at += count
            left -= count
        return pieces


class StaticFrame:
    """A :class:`FrameContext` over fixed registers and an :class:`ImageMemory`.

    With ``registers=None`` it is gdb without a process: memory reads come
    from the image, every register read raises "No registers.". Registers
    given as a mapping are copied and may be written.
    """

    def __init__(self, memory: ImageMemory, registers: Mapping[str, int] | None = None) -> None:
        """A frame over ``memory`` with these ``registers`` (gdb names)."""
        self.memory = memory
        self._registers = dict(registers) if registers is not None else None

    def read_register(self, name: str) -> int:
        """The register's value; RegisterUnavailable if this frame has none."""
        if self._registers is None:
            raise RegisterUnavailable("No registers.")
        try:
            return self._registers[name]
        except KeyError:
            raise RegisterUnavailable(f"register {name} is not available") from None

    def write_register(self, name: str, value: int) -> None:
        """Set a register; RegisterUnavailable without registers."""
        if self._registers is None:
            raise RegisterUnavailable("No registers.")
        self._registers[name] = value

    def read_memory(self, address: int, length: int) -> bytes:
        """Read the image (see :meth:`ImageMemory.read_memory`)."""
        return self.memory.read_memory(address, length)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write the image copy (see :meth:`ImageMemory.write_memory`)."""
        self.memory.write_memory(address, data)
