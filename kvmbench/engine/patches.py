"""The software-trap patch table.

Each patched guest-physical byte keeps the byte it replaced. Every read made
through the debugger sees the original bytes; every write made through the
debugger, or by the guest over a patched byte (self-modifying code), becomes
the new original and the trap is re-armed over it. Removing the last patch
at an address, or detaching, puts the original back.

An in-guest probe patches several bytes (a jump), each a patch here with
the probe as its ``owner``. A jump's trampoline holds copies of the
originals, so re-arming it over new originals would run stale code: an
owner whose originals change is noted in :attr:`PatchTable.stale`, and
the engine rebuilds or replaces that probe before the guest runs again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

PAGE_SHIFT = 12


class PhysicalMemory(Protocol):
    def read(self, address: int, length: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...


@dataclass
class Patch:
    address: int
    original: int
    opcode: int
    #: How many requests share this trap.
    users: int = 1
    #: False while the original is back in place to step over it.
    armed: bool = True
    #: The multi-byte patch this byte belongs to (an in-guest probe), if any.
    owner: object | None = None


class PatchTable:
    """Trap bytes in guest memory, and what they hide."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self._memory = memory
        self._patches: dict[int, Patch] = {}
        #: Owners whose original bytes changed under their patch.
        self.stale: set[object] = set()

    def __contains__(self, address: int) -> bool:
        return address in self._patches

    def __len__(self) -> int:
        return len(self._patches)

    def __iter__(self) -> Iterator[Patch]:
        return iter(list(self._patches.values()))

    def get(self, address: int) -> Patch | None:
        return self._patches.get(address)

    def insert(self, address: int, opcode: int, owner: object | None = None) -> Patch:
        """Arm a trap at ``address`` (or share the one already there). A byte
        of an ``owner``'s patch is never shared: the engine keeps other
        patches off an owner's bytes."""
        patch = self._patches.get(address)
        if patch is not None:
            assert owner is None and patch.owner is None, "a probe's bytes are not shared"
            patch.users += 1
            return patch
        original = self._memory.read(address, 1)[0]
        self._memory.write(address, bytes([opcode]))
        patch = self._patches[address] = Patch(address, original, opcode, owner=owner)
        return patch

    def _new_original(self, patch: Patch, value: int) -> None:
        if value != patch.original and patch.owner is not None:
            self.stale.add(patch.owner)
        patch.original = value

    def take_stale(self) -> set[object]:
        """Owners whose originals changed since the last call."""
        stale, self.stale = self.stale, set()
        return stale

    def remove(self, address: int) -> None:
        """Drop one user of the trap; the last one restores the original byte."""
        patch = self._patches[address]
        patch.users -= 1
        if patch.users == 0:
            del self._patches[address]
            self._memory.write(address, bytes([patch.original]))

    def remove_all(self) -> None:
        """Detach: every original byte back in place."""
        for patch in list(self._patches.values()):
            self._memory.write(patch.address, bytes([patch.original]))
        self._patches.clear()

    def lift(self, address: int) -> None:
        """Put the original back for one step over it; :meth:`rearm` after."""
        patch = self._patches[address]
        if patch.armed:
            self._memory.write(address, bytes([patch.original]))
            patch.armed = False

    def rearm(self, address: int) -> None:
        patch = self._patches.get(address)
        if patch is not None and not patch.armed:
            current = self._memory.read(address, 1)[0]
            # The stepped instruction may have rewritten its own first byte.
            self._new_original(patch, current)
            self._memory.write(address, bytes([patch.opcode]))
            patch.armed = True

    def shadow(self, address: int, data: bytes) -> bytes:
        """``data`` read at ``address`` with the trap bytes replaced by originals."""
        if not self._patches:
            return data
        end = address + len(data)
        hits = [p for a, p in self._patches.items() if address <= a < end and p.armed]
        if not hits:
            return data
        out = bytearray(data)
        for patch in hits:
            out[patch.address - address] = patch.original
        return bytes(out)

    def read(self, address: int, length: int) -> bytes:
        """Guest memory as the guest wrote it, traps hidden."""
        return self.shadow(address, self._memory.read(address, length))

    def write(self, address: int, data: bytes) -> None:
        """Store ``data`` keeping traps armed: patched bytes become new originals.

        Serves both debugger writes and guest stores the VMM completes for
        pages that hold traps (self-modifying code)."""
        if not self._patches:
            self._memory.write(address, data)
            return
        end = address + len(data)
        out = bytearray(data)
        for a, patch in self._patches.items():
            if address <= a < end:
                self._new_original(patch, data[a - address])
                if patch.armed:
                    out[a - address] = patch.opcode
        self._memory.write(address, bytes(out))

    def resync(self, pages: frozenset[int] | set[int]) -> None:
        """The guest wrote these pages without the traps being seen (a store
        stepped with the pages writable): a trap byte it overwrote takes the
        written byte as its original and is planted again."""
        for patch in self._patches.values():
            if patch.address >> PAGE_SHIFT in pages and patch.armed:
                current = self._memory.read(patch.address, 1)[0]
                if current != patch.opcode:
                    self._new_original(patch, current)
                    self._memory.write(patch.address, bytes([patch.opcode]))

    def pages(self) -> set[int]:
        """Page numbers that hold at least one trap."""
        return {a >> PAGE_SHIFT for a in self._patches}
