"""drgn over a live Linux guest: guest physical memory read in QEMU's own
memory, VMCOREINFO from guest memory, kallsyms from the kernel's own tables.

drgn's ``set_linux_kernel_custom`` takes physical memory segments with a
read callback and the raw VMCOREINFO; it then walks the kernel's page
tables itself. Without DWARF, drgn finds symbols through the kernel's
built-in kallsyms tables, which VMCOREINFO locates since Linux 6.0
(``drgn.helpers.linux.kallsyms.load_vmlinux_kallsyms``); types (and so
task lists and dmesg) need a vmlinux with DWARF, e.g. Debian's -dbg one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kvmbench.backends.linux.vmcoreinfo import Vmcoreinfo
from kvmbench.errors import KvmbenchError

if TYPE_CHECKING:
    import drgn


class KernelProgramError(KvmbenchError):
    """drgn is missing or cannot make sense of the guest."""


def _drgn():  # type: ignore[no-untyped-def]
    try:
        import drgn
    except ImportError:
        raise KernelProgramError("drgn is not installed (pip install drgn)") from None
    return drgn


def kernel_program(
    read: Callable[[int, int], bytes],
    ranges: Iterable[tuple[int, int]],
    vmcoreinfo: Vmcoreinfo,
    *,
    vmlinux: str | os.PathLike[str] | None = None,
    kallsyms: bool = True,
) -> "drgn.Program":
    """A drgn Program on the live kernel.

    ``read(address, size)`` reads guest physical memory over ``ranges``
    ([start, end) pairs). With ``vmlinux`` (an ELF with DWARF: types,
    task lists, dmesg) its debug info is loaded; otherwise the kernel's
    own kallsyms tables give symbols only.
    """
    drgn = _drgn()
    platform = drgn.Platform(
        drgn.Architecture.X86_64, drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
    )
    program = drgn.Program(platform)

    def segment_read(address: int, count: int, offset: int, physical: bool) -> bytes:
        return read(address, count)

    for start, end in ranges:
        program.add_memory_segment(start, end - start, segment_read, physical=True)
    program.set_linux_kernel_custom(vmcoreinfo.raw, True)
    if vmlinux is not None:
        try:
            program.load_debug_info([os.fspath(vmlinux)])
        except drgn.MissingDebugInfoError as exc:
            raise KernelProgramError(f"{vmlinux}: drgn found no usable debug info: {exc}") from None
    elif kallsyms:
        from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

        program.register_symbol_finder("vmlinux_kallsyms", load_vmlinux_kallsyms(program), enable_index=0)
    return program


#: drgn's SymbolKind and binding as the nm type letter kallsyms prints.
def _letter(symbol: "drgn.Symbol") -> str:
    drgn = _drgn()
    if symbol.kind == drgn.SymbolKind.FUNC:
        letter = "t"
    elif symbol.kind == drgn.SymbolKind.OBJECT:
        letter = "d"
    else:
        letter = "a"  # kallsyms' absolute symbols (per-CPU offsets) have no kind
    return letter.upper() if symbol.binding != drgn.SymbolBinding.LOCAL else letter


def kallsyms_text(program: "drgn.Program") -> str:
    """The program's symbols in /proc/kallsyms format, address order."""
    symbols = sorted(program.symbols(), key=lambda s: (s.address, s.name))
    return "".join(f"{s.address:016x} {_letter(s)} {s.name}\n" for s in symbols)


def tasks(program: "drgn.Program") -> list[tuple[int, str]]:
    """(pid, comm) of every task (needs DWARF: drgn walks task_struct)."""
    from drgn.helpers.linux.pid import for_each_task

    return [(int(task.pid), task.comm.string_().decode(errors="replace")) for task in for_each_task(program)]


def dmesg(program: "drgn.Program") -> str:
    """The kernel log as dmesg prints it (needs DWARF)."""
    from drgn.helpers.linux.printk import get_dmesg

    return get_dmesg(program).decode(errors="replace")


def debug_vmlinux_path(release: str, root: Path) -> Path:
    """Where Debian's -dbg package keeps the vmlinux with DWARF for ``release``."""
    return root / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{release}"
