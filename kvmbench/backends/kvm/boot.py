"""Long-mode boot: page tables, GDT, IDT, the ELF image and its arguments.

The guest starts directly in 64-bit mode (no firmware, no real-mode
trampoline), which is what makes a boot take milliseconds. Layout and
register contract: :mod:`kvmbench.backends.kvm.layout`.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from kvmbench.backends.kvm import abi, layout
from kvmbench.backends.kvm.memory import GuestMemory
from kvmbench.errors import UsageError

# Control-register bits (SDM vol. 3, 2.5) and EFER (2.2.1).
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
RFLAGS_RESERVED = 0x2

#: Largest image file accepted: guests are a few KiB, kernels tens of MiB.
MAX_IMAGE_SIZE = 256 << 20

_PAGE_PRESENT_RW = 0x3
_PAGE_HUGE = 0x80
#: Accessed and dirty, set from the start: the CPU never writes these
#: tables itself (SDM vol. 3, 4.8), so the engine may trap stores to them
#: (read-only memslots) to see a guest edit the mapping of the probe area.
_PAGE_ACCESSED_DIRTY = 0x60
#: GDT entries: null, 64-bit code (L=1), data (SDM vol. 3, 3.4.5).
_GDT = (0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)
#: Vectors that push an error code (SDM vol. 3, table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})


def write_boot_structures(memory: GuestMemory) -> None:
    """Identity paging for the first GiB, the GDT, and an IDT of fault stubs."""
    memory.write_u64(layout.PML4_ADDR, layout.PDPT_ADDR | _PAGE_PRESENT_RW | _PAGE_ACCESSED_DIRTY)
    memory.write_u64(layout.PDPT_ADDR, layout.PD_ADDR | _PAGE_PRESENT_RW | _PAGE_ACCESSED_DIRTY)
    memory.write(
        layout.PD_ADDR,
        b"".join(
            struct.pack("<Q", (i << 21) | _PAGE_PRESENT_RW | _PAGE_HUGE | _PAGE_ACCESSED_DIRTY)
            for i in range(512)
        ),
    )
    memory.write(layout.GDT_ADDR, struct.pack("<3Q", *_GDT))
    idt = bytearray()
    stubs = bytearray()
    for vector in range(256):
        handler = layout.FAULT_STUBS_ADDR + vector * layout.FAULT_STUB_SIZE
        # 64-bit interrupt gate, present, DPL 0 (SDM vol. 3, 6.14.1).
        idt += struct.pack(
            "<HHBBHII",
            handler & 0xFFFF,
            layout.GDT_CODE64_SELECTOR,
            0,
            0x8E,
            (handler >> 16) & 0xFFFF,
            handler >> 32,
            0,
        )
        # mov al, vector; out PORT_FAULT, al; jmp $ -- the VMM stops at the out.
        stub = bytes([0xB0, vector, 0xE6, layout.PORT_FAULT, 0xEB, 0xFE])
        stubs += stub.ljust(layout.FAULT_STUB_SIZE, b"\x90")
    memory.write(layout.IDT_ADDR, bytes(idt))
    memory.write(layout.FAULT_STUBS_ADDR, bytes(stubs))


#: Sizes of the ELF64 file and program headers (System V gABI, "ELF Header").
_EHDR_SIZE, _PHDR_SIZE = 64, 56
#: Program headers an image may have: real ones have a handful.
_MAX_PHNUM = 256


def _open_image(path: Path) -> bytes:
    """The image's bytes; a directory, a FIFO or a device is refused before
    it is opened (opening a FIFO would wait for a writer forever)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path}: not a regular file")
    if info.st_size < _EHDR_SIZE:
        raise UsageError(f"{path}: not an ELF file ({info.st_size} bytes, shorter than an ELF header)")
    if info.st_size > MAX_IMAGE_SIZE:
        raise UsageError(f"{path}: {info.st_size} bytes is more than an image can be "
                         f"({MAX_IMAGE_SIZE >> 20} MiB)")
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


def _check_headers(path: Path, data: bytes) -> None:
    """The ELF64 header facts pyelftools trusts, checked against the file."""
    if data[:4] != b"\x7fELF":
        raise UsageError(f"{path}: not an ELF file (no ELF magic)")
    if data[4] != 2 or data[5] != 1:
        raise UsageError(f"{path}: not a little-endian ELF64 image")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phnum == 0 or phnum > _MAX_PHNUM:
        raise UsageError(f"{path}: {phnum} program headers (an image has 1 to {_MAX_PHNUM})")
    if phentsize != _PHDR_SIZE:
        raise UsageError(f"{path}: program header size {phentsize}, not {_PHDR_SIZE}")
    if phoff < _EHDR_SIZE or phoff + phnum * phentsize > len(data):
        raise UsageError(f"{path}: program headers at {phoff:#x} lie outside the file")


def load_elf(memory: GuestMemory, path: Path) -> int:
    """Copy the ELF's PT_LOAD segments to their physical addresses; return the entry.

    Anything malformed (headers outside the file, a segment whose file size
    exceeds its memory size or the file, an entry outside the loaded code)
    is a UsageError, found before guest memory is touched."""
    data = _open_image(path)
    _check_headers(path, data)
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.get_machine_arch() != "x64" or elf.elfclass != 64:
            raise UsageError(f"{path}: not an x86-64 ELF64 image")
        segments = []
        for segment in elf.iter_segments("PT_LOAD"):
            address, memsz = segment["p_paddr"], segment["p_memsz"]
            offset, filesz = segment["p_offset"], segment["p_filesz"]
            if filesz > memsz:
                raise UsageError(f"{path}: a segment at {address:#x} has more file bytes "
                                 f"({filesz:#x}) than memory ({memsz:#x})")
            if offset + filesz > len(data):
                raise UsageError(f"{path}: a segment at {address:#x} runs past the end of the file")
            # Below the boot stack lie the VMM's page tables, GDT and IDT.
            if address < layout.BOOT_STACK_TOP or not memory.contains(address, memsz):
                raise UsageError(
                    f"{path}: segment at {address:#x}+{memsz:#x} does not fit guest memory "
                    f"({layout.BOOT_STACK_TOP:#x}..{memory.size:#x})"
                )
            segments.append((address, memsz, data[offset:offset + filesz]))
        entry = elf.header["e_entry"]
    except ELFError as e:
        raise UsageError(f"{path}: not an ELF file ({e})") from None
    except (struct.error, ValueError, KeyError, IndexError) as e:
        raise UsageError(f"{path}: malformed ELF ({e})") from None
    if not segments:
        raise UsageError(f"{path}: no loadable segment")
    if not any(address <= entry < address + memsz for address, memsz, _ in segments):
        raise UsageError(f"{path}: entry point {entry:#x} is outside every loaded segment")
    for address, memsz, contents in segments:
        memory.write(address, contents + bytes(memsz - len(contents)))
    return entry


def write_boot_args(memory: GuestMemory, argv: list[str]) -> tuple[int, int]:
    """Lay out argv at BOOT_ARGS_ADDR; return (argc, guest address of argv)."""
    pointers_size = (len(argv) + 1) * 8
    strings = bytearray()
    pointers = []
    for arg in argv:
        pointers.append(layout.BOOT_ARGS_ADDR + pointers_size + len(strings))
        # fsencode: an argument that was not UTF-8 on the command line
        # reaches the guest as the bytes it was.
        encoded = os.fsencode(arg)
        if b"\0" in encoded:
            raise UsageError(f"guest argument {arg!r} contains a NUL byte")
        strings += encoded + b"\0"
    if pointers_size + len(strings) > layout.BOOT_ARGS_SIZE:
        raise UsageError(f"guest arguments exceed {layout.BOOT_ARGS_SIZE} bytes")
    blob = struct.pack(f"<{len(pointers) + 1}Q", *pointers, 0) + strings
    memory.write(layout.BOOT_ARGS_ADDR, bytes(blob))
    return len(argv), layout.BOOT_ARGS_ADDR


def initial_regs(entry: int, argc: int, argv: int) -> abi.kvm_regs:
    return abi.kvm_regs(
        rip=entry, rsp=layout.BOOT_STACK_TOP, rdi=argc, rsi=argv, rflags=RFLAGS_RESERVED
    )


def long_mode_sregs(sregs: abi.kvm_sregs) -> abi.kvm_sregs:
    """``sregs`` (as KVM_GET_SREGS returned them) switched to flat 64-bit mode."""
    code = abi.kvm_segment(
        base=0, limit=0xFFFFFFFF, selector=layout.GDT_CODE64_SELECTOR,
        type=0xB, present=1, dpl=0, db=0, s=1, l=1, g=1,
    )
    data = abi.kvm_segment(
        base=0, limit=0xFFFFFFFF, selector=layout.GDT_DATA_SELECTOR,
        type=0x3, present=1, dpl=0, db=1, s=1, l=0, g=1,
    )
    sregs.cs = code
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    # VM entry checks want a busy 64-bit TSS in TR (SDM vol. 3, 27.3.1.2).
    sregs.tr = abi.kvm_segment(base=0, limit=0x67, selector=0, type=0xB, present=1, s=0, g=0)
    sregs.gdt = abi.kvm_dtable(base=layout.GDT_ADDR, limit=len(_GDT) * 8 - 1)
    sregs.idt = abi.kvm_dtable(base=layout.IDT_ADDR, limit=256 * 16 - 1)
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    sregs.cr3 = layout.PML4_ADDR
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    return sregs
