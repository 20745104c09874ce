"""The bundled guest programs: prebuilt ELFs, their sources and runtime.

Every guest is a freestanding x86-64 C program (``src/NAME.c``) linked with
a small runtime (``src/runtime.h``, ``crt0.S``, ``runtime.c``) at 1 MiB,
built at -O0 by ``make -C kvmbench/guests`` into ``bin/NAME.elf``. The ELFs
ship in the package, so running them needs no compiler; ``bin/MANIFEST``
records the toolchain and source hashes they were built from. Each
source's header comment says what the guest does, its arguments and its
exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
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
