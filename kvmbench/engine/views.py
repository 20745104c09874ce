"""What the session shows of the guest: registers and memory as the guest
sees them (software traps hidden), readable only while it is stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from kvmbench.arch.x86_64 import KVM_REGS_FIELDS
from kvmbench.backends.kvm.machine import Machine
from kvmbench.engine.patches import PatchTable
from kvmbench.errors import GuestMemoryError, UsageError

_GPRS: tuple[str, ...] = tuple(KVM_REGS_FIELDS)
#: gdb's spellings for the same registers.
_ALIASES = {"pc": "rip", "sp": "rsp", "fp": "rbp", "eflags": "rflags"}


class Registers(Mapping[str, int]):
    """The guest's general registers: ``regs.rip``, ``regs["rdi"]``; writable.

    Valid while the guest is stopped; writes reach the vCPU on the next run.
    """

    def __init__(self, machine: Machine, check: Callable[[], None]) -> None:
        object.__setattr__(self, "_machine", machine)
        object.__setattr__(self, "_check", check)

    @staticmethod
    def canonical(name: str) -> str:
        """'rip' for 'pc', '$rip', 'RIP'; raises UsageError for a non-register."""
        key = name.lstrip("$").lower()
        key = _ALIASES.get(key, key)
        if key not in _GPRS:
            raise UsageError(f"no register named {name!r}")
        return key

    def __getitem__(self, name: str) -> int:
        self._check()
        return getattr(self._machine.regs, self.canonical(name))

    def __setitem__(self, name: str, value: int) -> None:
        self._check()
        setattr(self._machine.regs, self.canonical(name), value & 0xFFFF_FFFF_FFFF_FFFF)
        self._machine.mark_regs_dirty()

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except UsageError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: int) -> None:
        self[name] = value

    def __iter__(self) -> Iterator[str]:
        return iter(_GPRS)

    def __len__(self) -> int:
        return len(_GPRS)

    def snapshot(self) -> dict[str, int]:
        """All registers now, as a plain dict (for 'changed since last stop')."""
        self._check()
        regs = self._machine.regs
        return {name: getattr(regs, name) for name in _GPRS}

    def __repr__(self) -> str:
        try:
            return " ".join(f"{k}={v:#x}" for k, v in self.snapshot().items())
        except Exception:  # noqa: BLE001 - repr must not raise
            return "<registers unavailable>"


class Memory:
    """Guest memory by virtual address (``phys=True`` for physical), as the
    guest wrote it: software-trap bytes are hidden from reads, and writes
    over them become the new originals."""

    def __init__(self, machine: Machine, patches: PatchTable, check: Callable[[], None]) -> None:
        self._machine = machine
        self._patches = patches
        self._check = check

    def _physical_runs(self, address: int, length: int, phys: bool) -> Iterator[tuple[int, int, int]]:
        """(offset, physical address, length) pieces, split at page boundaries."""
        if length < 0:
            raise UsageError("length must not be negative")
        if address < 0 or address + length > 1 << 64:
            raise GuestMemoryError(f"address {address:#x} is outside the address space")
        offset = 0
        while offset < length:
            here = address + offset
            chunk = min(length - offset, 4096 - (here & 0xFFF))
            yield offset, here if phys else self._machine.translate(here), chunk
            offset += chunk

    def read(self, address: int, length: int, *, phys: bool = False) -> bytes:
        self._check()
        out = bytearray()
        for _, pa, n in self._physical_runs(address, length, phys):
            out += self._patches.read(pa, n)
        return bytes(out)

    def write(self, address: int, data: bytes, *, phys: bool = False) -> None:
        self._check()
        pieces = list(self._physical_runs(address, len(data), phys))  # validate all first
        for pa_check in pieces:
            if not self._machine.memory.contains(pa_check[1], pa_check[2]):
                raise GuestMemoryError(f"address {address:#x}+{len(data)} is outside guest memory")
        for offset, pa, n in pieces:
            self._patches.write(pa, data[offset : offset + n])

    def read_int(self, address: int, size: int, *, signed: bool = False) -> int:
        return int.from_bytes(self.read(address, size), "little", signed=signed)

    def read_u64(self, address: int) -> int:
        return self.read_int(address, 8)

    def write_int(self, address: int, value: int, size: int) -> None:
        self.write(address, (value % (1 << (8 * size))).to_bytes(size, "little"))
