"""Guest physical memory: one anonymous mapping, exposed to KVM as memslots.

Pages can be made read-only to the guest (KVM_MEM_READONLY): a guest store
there exits as KVM_EXIT_MMIO and the VMM completes it. That is the page-trap
watchpoint mechanism; the host's view of the memory is always writable.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Iterable

from kvmbench.backends.kvm import abi, layout
from kvmbench.backends.kvm.system import Vm
from kvmbench.errors import GuestMemoryError

PAGE_SIZE = 4096

_PTE_PRESENT = 1 << 0
_PTE_WRITE = 1 << 1
_PTE_HUGE = 1 << 7
_PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000
_CR0_PG = 1 << 31


class GuestMemory:
    """``size`` bytes of guest RAM at guest-physical address 0."""

    def __init__(self, vm: Vm, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise GuestMemoryError(f"a guest memory size is a number of bytes, not {size!r}")
        if size <= 0 or size % PAGE_SIZE:
            raise GuestMemoryError(f"guest memory size must be a positive multiple of {PAGE_SIZE}")
        if not layout.MIN_MEM_SIZE <= size <= layout.MAX_MEM_SIZE:
            raise GuestMemoryError(
                f"guest memory size {size:#x} is outside {layout.MIN_MEM_SIZE >> 20} MiB.."
                f"{layout.MAX_MEM_SIZE >> 20} MiB (the VMM maps the first GiB)")
        self._vm = vm
        self.size = size
        try:
            self._map = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as e:
            raise GuestMemoryError(f"cannot allocate {size >> 20} MiB of guest memory: {e.strerror}") from None
        # SAFETY: KVM gets this address; the mapping lives until close(),
        # which deletes the memslots first.
        anchor = ctypes.c_char.from_buffer(self._map)
        self.host_address = ctypes.addressof(anchor)
        del anchor
        self._readonly_pages: frozenset[int] = frozenset()
        #: Installed memslots by the run of pages they map: (start, end, read-only).
        self._slots: dict[tuple[int, int, bool], abi.kvm_userspace_memory_region] = {}
        self._install_slots()

    # --- access from the host side (never trapped) -------------------------

    def _check(self, address: int, length: int) -> None:
        if address < 0 or length < 0 or address + length > self.size:
            raise GuestMemoryError(
                f"physical range {address:#x}+{length} is outside guest memory (0..{self.size:#x})"
            )

    def read(self, address: int, length: int) -> bytes:
        """``length`` bytes at guest-physical ``address``."""
        self._check(address, length)
        return self._map[address : address + length]

    def write(self, address: int, data: bytes) -> None:
        """Store ``data`` at guest-physical ``address`` (bypasses read-only slots)."""
        self._check(address, len(data))
        self._map[address : address + len(data)] = data

    def read_u64(self, address: int) -> int:
        self._check(address, 8)
        return int.from_bytes(self._map[address : address + 8], "little")

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))

    def contains(self, address: int, length: int = 1) -> bool:
        return 0 <= address and address + length <= self.size

    # --- read-only pages (page traps) --------------------------------------

    @property
    def readonly_pages(self) -> frozenset[int]:
        """Page numbers the guest cannot store to (its stores exit as MMIO)."""
        return self._readonly_pages

    def set_readonly_pages(self, pages: Iterable[int]) -> None:
        """Make exactly ``pages`` read-only to the guest.

        Only the memslots whose runs change are deleted and re-created; call
        it only while no vCPU runs, since a store into a slot being replaced
        would find no memory at all."""
        wanted = frozenset(pages)
        for page in wanted:
            self._check(page * PAGE_SIZE, PAGE_SIZE)
        if wanted != self._readonly_pages:
            self._readonly_pages = wanted
            self._install_slots()

    def _install_slots(self) -> None:
        # A slot's read-only flag cannot change in place, and KVM rejects
        # overlapping slots (api.rst, KVM_SET_USER_MEMORY_REGION: memory_size
        # 0 deletes one), so: delete the runs that go, then add the new ones.
        wanted = set(self._runs())
        for run in [r for r in self._slots if r not in wanted]:
            region = self._slots.pop(run)
            region.memory_size = 0
            self._vm.set_user_memory_region(region)
        used = {region.slot for region in self._slots.values()}
        free = (n for n in range(len(wanted) + len(used) + 1) if n not in used)
        for run in sorted(wanted - self._slots.keys()):
            start, end, readonly = run
            region = abi.kvm_userspace_memory_region(
                slot=next(free),
                flags=abi.KVM_MEM_READONLY if readonly else 0,
                guest_phys_addr=start,
                memory_size=end - start,
                userspace_addr=self.host_address + start,
            )
            self._vm.set_user_memory_region(region)
            self._slots[run] = region

    def _runs(self) -> list[tuple[int, int, bool]]:
        """Maximal [start, end) runs of pages that share writability."""
        runs: list[tuple[int, int, bool]] = []
        cursor = 0
        for page in sorted(self._readonly_pages):
            start = page * PAGE_SIZE
            if runs and runs[-1][2] and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], start + PAGE_SIZE, True)
            else:
                if start > cursor:
                    runs.append((cursor, start, False))
                runs.append((start, start + PAGE_SIZE, True))
            cursor = start + PAGE_SIZE
        if cursor < self.size:
            runs.append((cursor, self.size, False))
        return runs

    def close(self) -> None:
        if not self._map.closed:
            for slot in self._slots.values():
                slot.memory_size = 0
                try:
                    self._vm.set_user_memory_region(slot)
                except OSError:
                    pass  # the VM fd may already be gone; the mapping still goes
            self._slots = {}
            self._map.close()


def translate(
    read_u64: Callable[[int], int], cr0: int, cr3: int, address: int
) -> tuple[int, bool]:
    """Guest-virtual to guest-physical by a 4-level page walk (SDM vol. 3, 4.5).

    Returns (physical address, writable). With paging off, virtual is physical.
    Raises GuestMemoryError for an unmapped address.
    """
    if not cr0 & _CR0_PG:
        return address, True
    table = cr3 & _PTE_ADDR_MASK
    writable = True
    for level, shift in enumerate((39, 30, 21, 12)):
        entry = read_u64(table + ((address >> shift) & 0x1FF) * 8)
        if not entry & _PTE_PRESENT:
            raise GuestMemoryError(f"virtual address {address:#x} is not mapped")
        writable = writable and bool(entry & _PTE_WRITE)
        if level in (1, 2) and entry & _PTE_HUGE:
            page_mask = (1 << shift) - 1
            return (entry & _PTE_ADDR_MASK & ~page_mask) | (address & page_mask), writable
        table = entry & _PTE_ADDR_MASK
    return table | (address & 0xFFF), writable
