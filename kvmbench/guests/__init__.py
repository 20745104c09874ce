"""The bundled guest programs: prebuilt ELFs, their sources and runtime.

Every guest is a freestanding x86-64 C program (``src/NAME.c``) linked with
a small runtime (``src/runtime.h``, ``crt0.S``, ``runtime.c``) at 1 MiB,
built at -O0 by ``make -C kvmbench/guests`` into ``bin/NAME.elf``. The ELFs
ship in the package, so running them needs no compiler; ``bin/MANIFEST``
records the toolchain and source hashes they were built from. Each
source's header comment says what the guest does, its arguments and its
exit code.

kvmbench's VMM enters them in long mode; QEMU boots the same ELFs through
their PVH note (``src/pvh_entry.S``) with ``-kernel NAME.elf -append
"$(pvh_command_line(...))"``, ``-device isa-debug-exit,iobase=0xf4,iosize=4``
for the exit port (QEMU's exit status is then ``(code << 1) | 1``) and
:data:`QEMU_EXTRA_ARGS`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from kvmbench.errors import UsageError

#: Every bundled guest, in the order of the Makefile's GUESTS.
GUEST_NAMES: tuple[str, ...] = (
    "hello",
    "fib",
    "sort",
    "counter",
    "callmix",
    "selfmod",
    "int3guest",
    "ticks",
    "spin",
    "probe",
    "benchloop",
)

#: The guests' build directory. Their DWARF names files relative to it
#: (compilation directory ".", files "src/NAME.c"): a debugger's source root.
GUESTS_DIR = Path(__file__).resolve().parent
#: Room for the argv pointers and strings (runtime.h, kvm/layout.py BOOT_ARGS_SIZE).
BOOT_ARGS_SIZE = 0x1000
#: What the guest runtime's PVH entry splits its command line at.
_COMMAND_LINE_SPACES = frozenset(" \t\n")

#: QEMU options the guests want beside the kernel, command line and exit
#: device. -no-reboot: a guest that triple-faults ends QEMU instead of
#: booting again for ever. graphics=on: with -nographic and no display
#: device SeaBIOS would take COM1 as its console (sercon) and print its
#: banner before the guest's first character; the guests draw nothing.
QEMU_EXTRA_ARGS: tuple[str, ...] = ("-no-reboot", "-machine", "graphics=on")

#: Where the prebuilt ELFs and their MANIFEST live.
BIN_DIR = GUESTS_DIR / "bin"
#: The guests' C sources and runtime (a debugger's source search path).
SRC_DIR = GUESTS_DIR / "src"


def guest_path(name: str) -> Path:
    """The shipped ELF of the bundled guest ``name`` (e.g. ``"fib"``).

    Raises :class:`~kvmbench.errors.UsageError` for a name that is not a
    bundled guest.
    """
    if name not in GUEST_NAMES:
        raise UsageError(f"unknown guest {name!r}; bundled guests: {', '.join(GUEST_NAMES)}")
    return BIN_DIR / f"{name}.elf"


def iter_guests() -> Iterator[tuple[str, Path]]:
    """``(name, ELF path)`` of every bundled guest, in ``GUEST_NAMES`` order."""
    for name in GUEST_NAMES:
        yield name, BIN_DIR / f"{name}.elf"


def pvh_command_line(image: str | Path, args: Sequence[str] = ()) -> str:
    """The PVH command line (QEMU's ``-append``) that gives a guest the
    argv kvmbench's VMM gives it: the image's stem, then ``args``.

    The guest splits it at spaces, so an argument may not be empty or hold
    whitespace; raises :class:`~kvmbench.errors.UsageError` for those and
    for arguments that would not fit the guest's argument area.
    """
    argv = [Path(image).stem, *(str(a) for a in args)]
    for arg in argv:
        if arg == "" or _COMMAND_LINE_SPACES.intersection(arg):
            raise UsageError(f"guest argument {arg!r} cannot be passed on a PVH command line (empty or with spaces)")
    size = (len(argv) + 1) * 8 + sum(len(a.encode()) + 1 for a in argv)
    if size > BOOT_ARGS_SIZE:
        raise UsageError(f"guest arguments exceed {BOOT_ARGS_SIZE} bytes")
    return " ".join(argv)
