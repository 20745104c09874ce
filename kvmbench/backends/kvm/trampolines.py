"""In-guest probes on kvmbench's VMM: the probe area, its trampolines and
the ring the trampolines count hits into.

The area (``layout.PROBE_AREA_ADDR``, 2 MiB) is guest-physical memory
outside the guest's RAM, inside the first GiB the VMM's boot page tables
identity map (:mod:`kvmbench.backends.kvm.boot`): the guest reaches it at
the same virtual address without any change to its page tables, and code
linked at ``IMAGE_BASE`` reaches it with a ``jmp rel32``.

==========  ============================  =====================================
 part        where                         what
==========  ============================  =====================================
 code        area + [0, 1 MiB)             trampolines, ``SLOT_SIZE`` bytes each;
                                           a read-only memslot: a guest store
                                           there exits, and the VMM stops the
                                           guest with the address
 header      area + 1 MiB, one page        the registers the counting code
                                           saves; ``head``, the byte offset of
                                           the next free ring entry
 ring        the next ``RING_SIZE`` bytes  ``RING_ENTRIES`` entries of 16 bytes:
                                           the TSC's low half (u32), the
                                           probe's key (u32), the word at rsp
                                           (u64: the return address at a
                                           function's entry)
 guard       the page after the ring       no memslot at all: a store there
                                           exits as MMIO (api.rst, KVM_EXIT_MMIO)
==========  ============================  =====================================

A trampoline is counting code, then the displaced instructions' copies
(:func:`kvmbench.arch.displacement.relocate`) and the jump back. The
counting code (12 instructions; with the jumps there and back a hit costs
14) saves rax and rdx in the header, reads the TSC, stores the entry at
``head`` and advances it, and restores the registers: only
``mov``, ``lea`` and ``rdtsc``, so the flags are never touched (no
pushf/popf) and nothing is written below rsp (a red zone stays intact).
It must not be interrupted half-way (the saved registers and ``head`` are
shared by every trampoline): the VMM injects every interrupt itself
(KVM_INTERRUPT, there is no in-kernel irqchip), and it defers a timer
tick that finds rip in counting code to the next exit
(:meth:`ProbeArea.defers_interrupt`). The guest has one vCPU.

A full ring costs one exit, not one per hit: the store of an entry past
the ring's end lands on the guard page; the VMM completes the instruction
(its store goes nowhere), moves rip back to the load of ``head`` (the TSC
stays in eax:edx), and the engine drains the ring, which sets ``head`` to
0. Draining also happens at every stop and every ``DRAIN_INTERVAL``
seconds of a continuing run (a kick, as for a pause), so live plots see
hits as they happen.

The guest's page tables: the jumps assume the area is mapped at its
physical address. The engine traps stores to the paging structures that
map it (:meth:`ProbeArea.guard_pages`; the VMM's boot tables carry their
accessed and dirty bits already, so the CPU never writes them itself) and
asks :meth:`ProbeArea.mapped` before every resume; that walks the tables
again only after such a store or a CR3 change, and when the area is no
longer mapped the engine moves every probe to an exit mechanism. A CR3
load is seen at the next exit, not at once: a guest that switches to
tables of its own without the area, and runs a probed instruction before
any exit, takes a page fault at the area's address.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kvmbench.arch.displacement import (
    JMP_REL32_SIZE,
    Displacement,
    Undisplaceable,
    jmp_rel32,
    relocate,
)
from kvmbench.backends.kvm import abi, layout
from kvmbench.backends.kvm.memory import translate
from kvmbench.backends.target import ProbeHits, ProbeInstalled
from kvmbench.errors import GuestMemoryError, KvmError, ProbeRefused

if TYPE_CHECKING:
    from kvmbench.backends.kvm.machine import Machine

PAGE = 4096
AREA = layout.PROBE_AREA_ADDR
CODE_SIZE = 1 << 20
SLOT_SIZE = 256
SLOTS = CODE_SIZE // SLOT_SIZE
HEADER = AREA + CODE_SIZE
SAVE_RAX, SAVE_RDX = HEADER, HEADER + 8
HEAD = HEADER + 64
RING = HEADER + PAGE
ENTRY_SIZE = 16
RING_ENTRIES = 8192
RING_SIZE = ENTRY_SIZE * RING_ENTRIES
GUARD = RING + RING_SIZE
DATA_SIZE = GUARD - HEADER
#: Seconds between drains while the guest continues (a live panel draws at 5 Hz).
DRAIN_INTERVAL = 0.1

_RAX, _RDX = 0, 2  # ModRM register numbers (SDM vol. 2, table 2-2)
_PTE_PRESENT, _PTE_HUGE = 1, 1 << 7
_PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000
_MASK32 = 0xFFFF_FFFF


def _disp32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _store_absolute(register: int, address: int) -> bytes:
    """``mov [address], r64``: REX.W 89 /r with ModRM mod=00 rm=100 and a SIB
    of no base, no index: a bare disp32, sign-extended (SDM vol. 2, 2.2.1.3);
    the area lies below 2 GiB."""
    return bytes((0x48, 0x89, register << 3 | 0b100, 0x25)) + _disp32(address)


def _load_absolute(register: int, address: int) -> bytes:
    """``mov r64, [address]``: REX.W 8B /r, addressed as :func:`_store_absolute`."""
    return bytes((0x48, 0x8B, register << 3 | 0b100, 0x25)) + _disp32(address)


def _counting_prefix() -> tuple[bytes, int]:
    """(the counting code before the key's store, the offset of the load of
    ``head``). The whole is :func:`counting_code`."""
    code = (_store_absolute(_RAX, SAVE_RAX) + _store_absolute(_RDX, SAVE_RDX)
            + b"\x0f\x31")                                  # rdtsc: edx:eax = TSC
    rewind = len(code)
    code += _load_absolute(_RDX, HEAD)                      # rdx = head
    code += b"\x89\x82" + _disp32(RING)                     # mov [rdx+RING], eax
    return code, rewind


_PREFIX, REWIND_OFFSET = _counting_prefix()


def _entry_code(key: int) -> bytes:
    return (_PREFIX
            + b"\xc7\x82" + _disp32(RING + 4) + key.to_bytes(4, "little")  # mov dword [rdx+RING+4], key
            + b"\x48\x8b\x04\x24"                                       # mov rax, [rsp]
            + b"\x48\x89\x82" + _disp32(RING + 8)                       # mov [rdx+RING+8], rax
            + b"\x48\x8d\x52" + bytes((ENTRY_SIZE,))                    # lea rdx, [rdx+16]
            + _store_absolute(_RDX, HEAD))


#: Past the store of the advanced ``head``: between the load of ``head`` and
#: here, the guest holds a copy of it in rdx, so the ring may be drained
#: but ``head`` not reset.
HEAD_STORED_OFFSET = len(_entry_code(0))


def counting_code(key: int) -> bytes:
    """The counting code of the trampoline whose hits carry ``key``."""
    return _entry_code(key) + _load_absolute(_RDX, SAVE_RDX) + _load_absolute(_RAX, SAVE_RAX)


COUNTING_SIZE = len(counting_code(0))


def hit_instructions() -> int:
    """Guest instructions a probe adds to each hit: the counting code, the
    jump to the trampoline and the jump back."""
    from kvmbench.arch.instructions import disassemble

    return len(disassemble(counting_code(0), AREA)) + 2


class _DrainTimer(threading.Thread):
    """Asks a running guest to exit every ``DRAIN_INTERVAL`` seconds."""

    def __init__(self, machine: "Machine") -> None:
        super().__init__(name="kvmbench-probe-drain", daemon=True)
        self._machine = machine
        self.stopped = threading.Event()

    def run(self) -> None:
        machine = self._machine
        while not self.stopped.wait(DRAIN_INTERVAL):
            if machine.running:
                machine.request_drain()


class ProbeArea:
    """The probe area of one :class:`~kvmbench.backends.kvm.machine.Machine`,
    set up when the first probe is installed."""

    def __init__(self, machine: "Machine") -> None:
        self._machine = machine
        self._map: mmap.mmap | None = None
        self._slots: list[abi.kvm_userspace_memory_region] = []
        self._timer: _DrainTimer | None = None
        self._next_slot = 0
        #: Trampolines by (address, displaced bytes): a probe set again on
        #: unchanged code reuses its trampoline (none is ever freed).
        self._installed: dict[tuple[int, bytes], ProbeInstalled] = {}
        self._active: set[int] = set()
        self._tsc_khz: int | None = None
        #: Bytes of the ring already drained while ``head`` could not be reset.
        self._consumed = 0
        self._guard: frozenset[int] = frozenset()
        self._verified_cr3: int | None = None
        self._suspect = True

    # --- setting up -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._map is not None

    def _ensure(self) -> mmap.mmap:
        if self._map is not None:
            return self._map
        machine = self._machine
        area = mmap.mmap(-1, layout.PROBE_AREA_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        # SAFETY: KVM gets this address; the mapping lives until close(),
        # which deletes the memslots first.
        anchor = ctypes.c_char.from_buffer(area)
        host = ctypes.addressof(anchor)
        del anchor
        vm = machine.vm
        # Two slots at the top of the slot numbers, away from the ones
        # GuestMemory takes from 0 up (api.rst: KVM_CAP_NR_MEMSLOTS).
        top = vm.check_extension(abi.KVM_CAP_NR_MEMSLOTS) or 32
        for number, offset, size, flags in ((top - 2, 0, CODE_SIZE, abi.KVM_MEM_READONLY),
                                            (top - 1, CODE_SIZE, DATA_SIZE, 0)):
            region = abi.kvm_userspace_memory_region(
                slot=number, flags=flags, guest_phys_addr=AREA + offset, memory_size=size,
                userspace_addr=host + offset)
            vm.set_user_memory_region(region)
            self._slots.append(region)
        self._map = area
        machine.probe_hooks = self
        self._timer = _DrainTimer(machine)
        self._timer.start()
        return area

    # --- trampolines --------------------------------------------------------------

    def install(self, displacement: Displacement) -> ProbeInstalled:
        """Write the trampoline for ``displacement`` (or reuse its own)."""
        cached = self._installed.get((displacement.address, displacement.original))
        if cached is not None:
            self._active.add(cached.key)
            return cached
        if not self.mapped():
            raise ProbeRefused(f"the guest's page tables do not map the probe area at {AREA:#x}")
        if self._next_slot >= SLOTS:
            raise ProbeRefused(f"all {SLOTS} trampolines of the probe area are used")
        area = self._ensure()
        key = self._next_slot
        at = AREA + key * SLOT_SIZE
        counting = counting_code(key)
        try:
            relocated = relocate(displacement, at + len(counting))
            jump = jmp_rel32(displacement.address, at)
        except Undisplaceable as e:
            raise ProbeRefused(str(e)) from None
        code = counting + relocated.code
        if len(code) > SLOT_SIZE:
            raise ProbeRefused(f"a trampoline of {len(code)} bytes does not fit {SLOT_SIZE}")
        area[key * SLOT_SIZE:key * SLOT_SIZE + len(code)] = code
        self._next_slot += 1
        padding = b"\xcc" * (displacement.length - JMP_REL32_SIZE)  # never run: int3
        installed = ProbeInstalled(key, (at, relocated.end), jump + padding,
                                   (at, at + len(counting)), relocated.copies)
        self._installed[(displacement.address, displacement.original)] = installed
        self._active.add(key)
        return installed

    def remove(self, key: int) -> None:
        self._active.discard(key)

    @property
    def active(self) -> bool:
        return bool(self._active)

    # --- the ring -------------------------------------------------------------------

    def _head(self) -> int:
        assert self._map is not None
        offset = HEAD - AREA
        return int.from_bytes(self._map[offset:offset + 8], "little")

    def _holds_head(self, rip: int) -> bool:
        """rip stands in counting code that has loaded ``head`` and not yet
        stored it back (the rewound rip of a full ring has not loaded it)."""
        offset = rip - AREA
        if not 0 <= offset < self._next_slot * SLOT_SIZE:
            return False
        return REWIND_OFFSET < offset % SLOT_SIZE < HEAD_STORED_OFFSET

    def drain(self, rip: int) -> ProbeHits:
        """The ring's entries not drained yet, oldest first, with their TSCs
        as host times; the guest stands at ``rip``. The ring is emptied
        (``head`` back to 0) unless the guest holds a copy of ``head``
        there: then the next drain goes on from where this one ended."""
        if self._map is None:
            return ProbeHits([], [], [])
        head = self._head()
        # The header is guest-writable memory: take only whole entries
        # inside the ring, whatever a stray guest store left in head.
        end = min(head, RING_SIZE) // ENTRY_SIZE * ENTRY_SIZE
        start = min(self._consumed, end)
        if self._holds_head(rip):
            self._consumed = end
        else:
            self._map[HEAD - AREA:HEAD - AREA + 8] = bytes(8)
            self._consumed = 0
        if end == start:
            return ProbeHits([], [], [])
        words = array("Q")
        words.frombytes(self._map[RING - AREA + start:RING - AREA + end])
        first = words[0::2]
        keys = [w >> 32 for w in first]
        callers = list(words[1::2])
        return ProbeHits(keys, self._times(w & _MASK32 for w in first), callers)

    def _times(self, tsc_lows: Iterable[int]) -> list[int]:
        """The low halves of TSC values as ``time.perf_counter_ns`` times:
        the guest's TSC now (KVM_GET_MSRS of IA32_TIME_STAMP_COUNTER)
        against the host clock now, at the guest's TSC rate
        (KVM_GET_TSC_KHZ). An entry is at most a drain interval old while
        the guest runs, far less than the 2**32 ticks (over a second at
        4 GHz) after which its low half would wrap, so the high half is
        the one that puts it at or before now."""
        vcpu = self._machine.vcpu
        now_ns = time.perf_counter_ns()
        try:
            if self._tsc_khz is None:
                self._tsc_khz = vcpu.get_tsc_khz()
            now_tsc = vcpu.get_msr(abi.MSR_IA32_TSC)
        except KvmError:
            return [now_ns for _ in tsc_lows]
        khz = self._tsc_khz or 1
        return [now_ns - ((now_tsc - low) & _MASK32) * 1_000_000 // khz for low in tsc_lows]

    # --- what the machine asks -------------------------------------------------------

    def is_guard(self, address: int) -> bool:
        """A store here is an entry past the ring's end: the ring is full."""
        return self._map is not None and GUARD <= address < GUARD + PAGE

    def defers_interrupt(self, rip: int) -> bool:
        """rip stands in counting code, which must not be interrupted."""
        offset = rip - AREA
        return 0 <= offset < self._next_slot * SLOT_SIZE and offset % SLOT_SIZE < COUNTING_SIZE

    def rewind(self, regs: abi.kvm_regs) -> bool:
        """After a full ring's guard store: rip back to the load of ``head``."""
        offset = int(regs.rip) - AREA
        if not (0 <= offset < self._next_slot * SLOT_SIZE
                and offset % SLOT_SIZE < COUNTING_SIZE):
            return False
        regs.rip = AREA + offset - offset % SLOT_SIZE + REWIND_OFFSET
        return True

    # --- the debugger's view ------------------------------------------------------------

    @staticmethod
    def contains(address: int, length: int = 1) -> bool:
        return AREA <= address and address + length <= AREA + layout.PROBE_AREA_SIZE

    def read(self, address: int, length: int) -> bytes:
        """The area's bytes (zeros before the first probe, and on the guard page)."""
        if not self.contains(address, length):
            raise GuestMemoryError(f"physical range {address:#x}+{length} is outside the probe area")
        if self._map is None:
            return bytes(length)
        return self._map[address - AREA:address - AREA + length]

    # --- the guest's page tables ----------------------------------------------------------

    def guard_pages(self) -> frozenset[int]:
        """The page numbers of the paging structures that map the area now."""
        machine = self._machine
        sregs = machine.get_sregs()
        memory = machine.memory
        if not sregs.cr0 & (1 << 31):
            return frozenset()
        tables: list[int] = []
        table = int(sregs.cr3) & _PTE_ADDR_MASK
        for level, shift in enumerate((39, 30, 21, 12)):
            if not memory.contains(table, PAGE):
                break
            tables.append(table >> 12)
            entry = memory.read_u64(table + ((AREA >> shift) & 0x1FF) * 8)
            if not entry & _PTE_PRESENT or (level in (1, 2) and entry & _PTE_HUGE):
                break
            table = entry & _PTE_ADDR_MASK
        self._guard = frozenset(tables)
        return self._guard

    def note_stores(self, pieces: Iterable[tuple[int, bytes]]) -> None:
        """Trapped guest stores: one to a paging structure of the area makes
        the next :meth:`mapped` walk the tables again."""
        if any(address >> 12 in self._guard for address, _ in pieces):
            self._suspect = True

    def mapped(self) -> bool:
        """Whether every page of the area in use translates to itself."""
        machine = self._machine
        sregs = machine.get_sregs()
        if not self._suspect and sregs.cr3 == self._verified_cr3:
            return True
        memory = machine.memory
        used = [AREA + offset for offset in range(0, max(self._next_slot * SLOT_SIZE, 1), PAGE)]
        used += list(range(HEADER, GUARD, PAGE))
        for page in used:
            try:
                if translate(memory.read_u64, sregs.cr0, sregs.cr3, page)[0] != page:
                    return False
            except GuestMemoryError:
                return False
        self._verified_cr3 = int(sregs.cr3)
        self._suspect = False
        return True

    def close(self) -> None:
        """Stop draining, delete the memslots and unmap (before the VM goes)."""
        if self._timer is not None:
            self._timer.stopped.set()
            self._timer.join()
            self._timer = None
        machine = self._machine
        if machine.probe_hooks is self:
            machine.probe_hooks = None
        for region in self._slots:
            region.memory_size = 0
            try:
                machine.vm.set_user_memory_region(region)
            except OSError:
                pass  # the VM fd may already be gone; the mapping still goes
        self._slots = []
        if self._map is not None:
            self._map.close()
            self._map = None
