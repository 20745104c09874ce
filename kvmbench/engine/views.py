"""What the session shows of the guest: registers and memory as the guest
sees them (software traps hidden), readable only while it is stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from kvmbench.arch.x86_64 import KVM_REGS_FIELDS
from kvmbench.backends.target import Target
from kvmbench.engine.patches import PatchTable
from kvmbench.errors import GuestMemoryError, UsageError

_GPRS: tuple[str, ...] = tuple(KVM_REGS_FIELDS)
#: gdb's spellings for the same registers.
_ALIASES = {"pc": "rip", "sp": "rsp", "fp": "rbp", "eflags": "rflags"}
_EXTRA = ("fs_base", "gs_base", "cs", "ss", "ds", "es", "fs", "gs")
_MASK64 = (1 << 64) - 1
_ADDRESS_SPACE = 1 << 64


class Registers(Mapping[str, int]):
    """The guest's general registers: ``regs.rip``, ``regs["rdi"]``; writable.

    Valid while the guest is stopped; writes reach the vCPU on the next run.
    Segment bases and selectors (``fs_base``, ``cs``...) read as well.
    """

    def __init__(self, target: Target, check: Callable[[], None],
                 write: Callable[[Callable[[], None]], None] | None = None) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_check", check)
        # Writes go through the session, which may apply them between runs.
        object.__setattr__(self, "_write", write or (lambda change: change()))

    @staticmethod
    def canonical(name: str) -> str:
        """'rip' for 'pc', '$rip', 'RIP'; raises UsageError for a non-register."""
        if not isinstance(name, str):
            raise UsageError(f"a register name is a string, not {name!r}")
        key = name.lstrip("$").lower()
        key = _ALIASES.get(key, key)
        if key not in _GPRS and key not in _EXTRA:
            raise UsageError(f"no register named {name!r}")
        return key

    def __getitem__(self, name: str) -> int:
        self._check()
        return self._target.read_register(self.canonical(name))

    def __setitem__(self, name: str, value: int) -> None:
        key = self.canonical(name)
        if key not in _GPRS:
            raise UsageError(f"register {name!r} cannot be written")
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"a register value is an integer, not {value!r}")
        self._write(lambda: self._target.write_register(key, value & _MASK64))

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
        return dict(self._target.read_registers())

    def __repr__(self) -> str:
        try:
            return " ".join(f"{k}={v:#x}" for k, v in self.snapshot().items())
        except Exception:  # noqa: BLE001 - repr must not raise
            return "<registers unavailable>"


class Memory:
    """Guest memory by virtual address (``phys=True`` for physical), as the
    guest wrote it: software-trap bytes are hidden from reads, and writes
    over them become the new originals.

    On targets without physical access (a GDB stub) reads and writes go to
    virtual memory directly; such stubs insert their own breakpoints and
    hide them themselves.
    """

    def __init__(self, target: Target, patches: PatchTable | None, check: Callable[[], None],
                 write: Callable[[Callable[[], None]], None] | None = None) -> None:
        self._target = target
        self._patches = patches
        self._check = check
        self._write = write or (lambda change: change())
        self._physical = target.capabilities.physical_memory

    @staticmethod
    def _validate(address: object, length: object) -> tuple[int, int]:
        if not isinstance(address, int) or isinstance(address, bool):
            raise UsageError(f"an address is an integer, not {address!r}")
        if not isinstance(length, int) or isinstance(length, bool):
            raise UsageError(f"a length is an integer, not {length!r}")
        if length < 0:
            raise UsageError("length must not be negative")
        if address < 0 or address + length > _ADDRESS_SPACE:
            raise GuestMemoryError(f"address {address:#x} is outside the address space")
        return address, length

    def _physical_runs(self, address: int, length: int, phys: bool) -> Iterator[tuple[int, int, int]]:
        """(offset, physical address, length) pieces, split at page boundaries."""
        offset = 0
        while offset < length:
            here = address + offset
            chunk = min(length - offset, 4096 - (here & 0xFFF))
            yield offset, here if phys else self._target.translate(here), chunk
            offset += chunk

    def read(self, address: int, length: int, *, phys: bool = False, raw: bool = False) -> bytes:
        """``length`` bytes at ``address`` as the guest wrote them; with
        ``raw``, as the CPU fetches them now (trap bytes shown)."""
        self._check()
        return self.read_unchecked(address, length, phys=phys, raw=raw)

    def read_unchecked(self, address: int, length: int, *, phys: bool = False,
                       raw: bool = False) -> bytes:
        """:meth:`read` for the engine itself, while the guest is formally running."""
        if (self._physical and not phys and type(address) is int and type(length) is int
                and 0 <= length <= 0x1000 - (address & 0xFFF) and address >= 0):
            # The engine's usual read (code at pc, a stack slot): one page.
            # read_physical bounds-checks the range itself.
            target = self._target
            pa = target.translate(address)
            data = target.read_physical(pa, length)
            patches = self._patches
            return patches.shadow(pa, data) if patches is not None and not raw else data
        address, length = self._validate(address, length)
        if not self._physical:
            if phys:
                raise GuestMemoryError(f"the {self._target.capabilities.name} target has no "
                                       "physical memory access")
            return self._target.read_memory(address, length)
        target, patches = self._target, self._patches
        out = bytearray()
        for _, pa, n in self._physical_runs(address, length, phys):
            if not target.contains_physical(pa, n):
                raise GuestMemoryError(f"physical range {pa:#x}+{n} is outside guest memory")
            data = target.read_physical(pa, n)
            out += patches.shadow(pa, data) if patches is not None and not raw else data
        return bytes(out)

    def write(self, address: int, data: bytes, *, phys: bool = False) -> None:
        self._check()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"data to write is bytes, not {type(data).__name__}")
        address, _ = self._validate(address, len(data))
        self._write(lambda: self.write_unchecked(address, bytes(data), phys=phys))

    def write_unchecked(self, address: int, data: bytes, *, phys: bool = False) -> None:
        if not self._physical:
            self._target.write_memory(address, data)
            return
        if not phys and 0 <= address and len(data) <= 0x1000 - (address & 0xFFF):
            # One page, the engine's own stores; write_physical bounds-checks.
            pa = self._target.translate(address)
            if self._patches is not None:
                self._patches.write(pa, data)
            else:
                self._target.write_physical(pa, data)
            return
        pieces = list(self._physical_runs(address, len(data), phys))  # validate all first
        for _, pa, n in pieces:
            if not self._target.contains_physical(pa, n):
                raise GuestMemoryError(f"address {address:#x}+{len(data)} is outside guest memory")
        for offset, pa, n in pieces:
            chunk = data[offset : offset + n]
            if self._patches is not None:
                self._patches.write(pa, chunk)
            else:
                self._target.write_physical(pa, chunk)

    def read_int(self, address: int, size: int, *, signed: bool = False) -> int:
        return int.from_bytes(self.read(address, size), "little", signed=signed)

    def read_u64(self, address: int) -> int:
        return self.read_int(address, 8)

    def write_int(self, address: int, value: int, size: int) -> None:
        self.write(address, (value % (1 << (8 * size))).to_bytes(size, "little"))


class EngineMemory(Memory):
    """The engine's own view: no state check (it reads while the guest is
    formally running, between two KVM_RUNs)."""

    def __init__(self, target: Target, patches: PatchTable | None) -> None:
        super().__init__(target, patches, lambda: None)

    # The engine's hot path: no state check, no argument validation beyond
    # what the unchecked paths do.
    read = Memory.read_unchecked
    write = Memory.write_unchecked


class RegisterValues(dict[str, int]):
    """The target's registers by name for instruction facts
    (:func:`kvmbench.arch.instructions.memory_accesses`), each read from the
    target when first asked (a store's operands need two or three)."""

    def __init__(self, target: Target) -> None:
        self._target = target  # dict.__new__ made it empty: one per hit

    def __missing__(self, name: str) -> int:
        try:
            value = self._target.read_register(name)
        except (UsageError, GuestMemoryError):
            raise KeyError(name) from None
        self[name] = value
        return value
