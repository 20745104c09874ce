"""The software-trap patch table.

Each patched guest-physical byte keeps the byte it replaced. Every read made
through the debugger sees the original bytes; every write made through the
debugger, or by the guest over a patched byte (self-modifying code), becomes
the new original and the trap is re-armed over it. Removing the last patch
at an address, or detaching, puts the original back.
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


class PatchTable:
    """Trap bytes in guest memory, and what they hide."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self._memory = memory
        self._patches: dict[int, Patch] = {}
        #: Page number -> the patches on it: reads and writes look only at
        #: the pages they touch, however many traps there are.
        self._by_page: dict[int, dict[int, Patch]] = {}

    def __contains__(self, address: int) -> bool:
        return address in self._patches

    def __len__(self) -> int:
        return len(self._patches)

    def __iter__(self) -> Iterator[Patch]:
        return iter(list(self._patches.values()))

    def get(self, address: int) -> Patch | None:
        return self._patches.get(address)

    def insert(self, address: int, opcode: int) -> Patch:
        """Arm a trap at ``address`` (or share the one already there)."""
        patch = self._patches.get(address)
        if patch is not None:
            patch.users += 1
            return patch
        original = self._memory.read(address, 1)[0]
        self._memory.write(address, bytes([opcode]))
        patch = self._patches[address] = Patch(address, original, opcode)
        self._by_page.setdefault(address >> PAGE_SHIFT, {})[address] = patch
        return patch

    def _forget(self, address: int) -> None:
        del self._patches[address]
        page = self._by_page[address >> PAGE_SHIFT]
        del page[address]
        if not page:
            del self._by_page[address >> PAGE_SHIFT]

    def _overlapping(self, address: int, end: int) -> list[Patch]:
        """Patches in [address, end), from the pages that range touches."""
        found: list[Patch] = []
        by_page = self._by_page
        for page in range(address >> PAGE_SHIFT, ((end - 1) >> PAGE_SHIFT) + 1):
            patches = by_page.get(page)
            if not patches:
                continue
            if end - address < len(patches):  # a guest store: a few bytes, many traps
                found.extend(p for a in range(address, end) if (p := patches.get(a)) is not None)
            else:
                found.extend(p for a, p in patches.items() if address <= a < end)
        return found

    def armed_in(self, address: int, end: int) -> bool:
        """True if a trap byte in [address, end) is armed."""
        return bool(self._by_page) and any(p.armed for p in self._overlapping(address, end))

    def remove(self, address: int) -> None:
        """Drop one user of the trap; the last one restores the original byte."""
        patch = self._patches[address]
        patch.users -= 1
        if patch.users == 0:
            self._forget(address)
            self._memory.write(address, bytes([patch.original]))

    def remove_all(self) -> None:
        """Detach: every original byte back in place."""
        for patch in list(self._patches.values()):
            self._memory.write(patch.address, bytes([patch.original]))
        self._patches.clear()
        self._by_page.clear()

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
            patch.original = current
            self._memory.write(address, bytes([patch.opcode]))
            patch.armed = True

    def shadow(self, address: int, data: bytes) -> bytes:
        """``data`` read at ``address`` with the trap bytes replaced by originals."""
        if not self._patches or not data:
            return data
        end = address + len(data)
        if address >> PAGE_SHIFT == (end - 1) >> PAGE_SHIFT:
            # One page, the engine's usual read (code at pc, a stack slot).
            on_page = self._by_page.get(address >> PAGE_SHIFT)
            if not on_page:
                return data
            if len(data) >= len(on_page):
                out = None
                for a, p in on_page.items():
                    if address <= a < end and p.armed:
                        if out is None:
                            out = bytearray(data)
                        out[a - address] = p.original
                return data if out is None else bytes(out)
            hits = [p for a in range(address, end) if (p := on_page.get(a)) is not None and p.armed]
        else:
            hits = [p for p in self._overlapping(address, end) if p.armed]
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
        hits = self._overlapping(address, address + len(data)) if self._patches and data else ()
        if not hits:
            self._memory.write(address, data)
            return
        out = bytearray(data)
        for patch in hits:
            patch.original = data[patch.address - address]
            if patch.armed:
                out[patch.address - address] = patch.opcode
        self._memory.write(address, bytes(out))

    def resync(self, pages: frozenset[int] | set[int]) -> None:
        """The guest wrote these pages without the traps being seen (a store
        stepped with the pages writable): a trap byte it overwrote takes the
        written byte as its original and is planted again."""
        for patch in [p for page in pages for p in self._by_page.get(page, {}).values()]:
            if patch.armed:
                current = self._memory.read(patch.address, 1)[0]
                if current != patch.opcode:
                    patch.original = current
                    self._memory.write(patch.address, bytes([patch.opcode]))

    def pages(self) -> set[int]:
        """Page numbers that hold at least one trap."""
        return set(self._by_page)
