"""kvmbench: a Jupyter-kernel debugging workbench for KVM guests.

>>> import kvmbench
>>> s = kvmbench.open("fib", args=["20"])
>>> bp = s.breakpoints.trace("fib")
>>> s.cont().describe()
'guest exited with code 0'
>>> bp.hit_count
21891
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kvmbench.backends.capabilities import HostCapabilities
from kvmbench.backends.kvm import layout
from kvmbench.backends.kvm.machine import Machine
from kvmbench.backends.kvm.probe import probe_host
from kvmbench.backends.kvm.target import KvmTarget
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError
from kvmbench.guests import GUEST_NAMES, guest_path
from kvmbench.symbols import load_symbols

__all__ = ["open", "Session", "GUEST_NAMES", "resolve_image"]
__version__ = "0.1.0"


def resolve_image(guest: str | Path) -> Path:
    """A bundled guest's ELF by name, or an ELF path as given."""
    if isinstance(guest, str) and guest in GUEST_NAMES:
        return guest_path(guest)
    path = Path(guest)
    if not path.exists() and isinstance(guest, str) and "/" not in guest and "." not in guest:
        return guest_path(guest)  # raises: unknown guest, listing the bundled ones
    return path


def open(  # noqa: A001 - the library's entry point, like io.open
    guest: str | Path,
    args: Sequence[str | int] = (),
    *,
    capabilities: HostCapabilities | None = None,
    on_console: Callable[[str], None] | None = None,
    mem_size: int = layout.DEFAULT_MEM_SIZE,
) -> Session:
    """Boot ``guest`` (a bundled guest's name or an ELF path) stopped at its
    first instruction, under a debug session."""
    if not isinstance(guest, (str, Path)):
        raise UsageError(f"a guest is a bundled guest's name or an ELF path, not {guest!r}")
    if isinstance(args, (str, bytes)) or not all(
            isinstance(a, (str, int)) and not isinstance(a, bool) for a in args):
        raise UsageError(f"guest arguments are a list of strings or numbers, not {args!r}")
    image = resolve_image(guest)
    caps = capabilities if capabilities is not None else probe_host()
    machine = Machine.boot(image, [str(a) for a in args], mem_size=mem_size, on_console=on_console)
    return Session(KvmTarget(machine, caps), lambda: load_symbols(image), image)


