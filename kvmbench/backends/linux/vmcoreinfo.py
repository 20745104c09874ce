"""VMCOREINFO found in a live guest's physical memory.

The kernel keeps its VMCOREINFO as an ELF note in a page of its own
(kernel/crash_core.c: ``vmcoreinfo_note`` from alloc_pages_exact; the format
is Documentation/admin-guide/kdump/vmcoreinfo.rst): an Elf64_Nhdr (namesz 11,
descsz, type 0), the name ``VMCOREINFO`` padded to 12 bytes, then
``KEY=VALUE`` lines starting with ``OSRELEASE=``. Scanning RAM for that
header is how a debugger finds it with no help from the guest (drgn's
maintainers do the same over raw physical dumps); the guest's own
/sys/kernel/vmcoreinfo names the same physical address.

``KERNELOFFSET`` is the KASLR slide of the kernel's virtual base
(arch/x86/kernel/machine_kexec_64.c, ``kaslr_offset()``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kvmbench.errors import KvmbenchError

NOTE_NAME = b"VMCOREINFO\x00\x00"  # "VMCOREINFO\0" padded to 4 bytes
_NHDR = struct.Struct("<III")  # namesz, descsz, type (Elf64_Nhdr)
_MARKER = NOTE_NAME + b"OSRELEASE="
_SCAN_CHUNK = 16 << 20
#: The note is one page at most (VMCOREINFO_BYTES is PAGE_SIZE in crash_core.h).
_MAX_DESC = 4096


class VmcoreinfoError(KvmbenchError):
    """No VMCOREINFO note in guest memory, or a malformed one."""


@dataclass(frozen=True)
class Vmcoreinfo:
    """A parsed VMCOREINFO note and where it lies in guest physical memory."""

    physical_address: int
    raw: bytes

    @property
    def fields(self) -> dict[str, str]:
        text = self.raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def get(self, key: str) -> str | None:
        return self.fields.get(key)

    @property
    def osrelease(self) -> str:
        return self.fields.get("OSRELEASE", "")

    @property
    def kernel_offset(self) -> int:
        """The KASLR slide (0 for a kernel that was not moved)."""
        value = self.fields.get("KERNELOFFSET")
        if value is None:
            raise VmcoreinfoError("VMCOREINFO has no KERNELOFFSET (not an x86-64 kernel with KASLR support?)")
        return int(value, 16)

    def symbol(self, name: str) -> int | None:
        """A ``SYMBOL(name)=hex`` entry (the runtime address)."""
        value = self.fields.get(f"SYMBOL({name})")
        return int(value, 16) if value is not None else None

    def number(self, name: str) -> int | None:
        value = self.fields.get(f"NUMBER({name})")
        return int(value, 0) if value is not None else None


def parse_note(data: bytes, physical_address: int = 0) -> Vmcoreinfo:
    """A VMCOREINFO note (its header first) read from guest memory."""
    if len(data) < _NHDR.size + len(NOTE_NAME):
        raise VmcoreinfoError("too short for a VMCOREINFO note")
    namesz, descsz, kind = _NHDR.unpack_from(data)
    if namesz != 11 or kind != 0 or data[_NHDR.size : _NHDR.size + 12] != NOTE_NAME or descsz > _MAX_DESC:
        raise VmcoreinfoError(f"no VMCOREINFO note header at {physical_address:#x}")
    start = _NHDR.size + len(NOTE_NAME)
    desc = data[start : start + descsz]
    if not desc.startswith(b"OSRELEASE="):
        raise VmcoreinfoError(f"the VMCOREINFO note at {physical_address:#x} does not start with OSRELEASE=")
    return Vmcoreinfo(physical_address, desc)


def find_vmcoreinfo(
    read: Callable[[int, int], bytes], ranges: Iterable[tuple[int, int]], *, hint: int | None = None
) -> Vmcoreinfo:
    """Scan guest RAM (``ranges`` of physical [start, end)) for the note.

    ``read(address, size)`` reads guest physical memory. ``hint`` (a
    physical address found before, e.g. for the same snapshot) is tried
    first. Only page-aligned headers count: the note has a page of its own,
    and the kernel image's own copies of the strings are not page-aligned
    note headers.
    """
    if hint is not None:
        try:
            return parse_note(read(hint, _NHDR.size + len(NOTE_NAME) + _MAX_DESC), hint)
        except (VmcoreinfoError, KvmbenchError):
            pass
    for start, end in ranges:
        address = start
        while address < end:
            size = min(_SCAN_CHUNK + len(_MARKER), end - address)
            chunk = read(address, size)
            for match in re.finditer(re.escape(_MARKER), chunk):
                header = address + match.start() - _NHDR.size
                if header % 4096:
                    continue
                try:
                    return parse_note(read(header, _NHDR.size + len(NOTE_NAME) + _MAX_DESC), header)
                except VmcoreinfoError:
                    continue
            address += _SCAN_CHUNK
    raise VmcoreinfoError("no VMCOREINFO note in guest RAM (CONFIG_CRASH_CORE off, or the kernel is not up yet)")
