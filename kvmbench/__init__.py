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
from typing import TYPE_CHECKING, Any

from kvmbench.backends.capabilities import HostCapabilities
from kvmbench.backends.kvm import layout
from kvmbench.backends.kvm.machine import Machine
from kvmbench.backends.kvm.probe import probe_host
from kvmbench.backends.kvm.target import KvmTarget
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError
from kvmbench.guests import GUEST_NAMES, guest_path
from kvmbench.symbols import load_symbols

if TYPE_CHECKING:
    from kvmbench.linux_session import LinuxSession


__all__ = ["open", "attach", "linux", "Session", "GUEST_NAMES", "TARGETS", "resolve_image"]
__version__ = "0.1.0"


def resolve_image(guest: str | Path) -> Path:
    """A bundled guest's ELF by name, or an ELF path as given."""
    if isinstance(guest, str) and guest in GUEST_NAMES:
        return guest_path(guest)
    path = Path(guest)
    if not path.exists() and isinstance(guest, str) and "/" not in guest and "." not in guest:
        return guest_path(guest)  # raises: unknown guest, listing the bundled ones
    return path


TARGETS = ("kvm", "qemu", "auto")


def _kvm_usable() -> bool:
    from kvmbench.backends.kvm.system import Kvm
    from kvmbench.errors import HostUnsupported

    try:
        Kvm.open().close()
    except HostUnsupported:
        return False
    return True


def open(  # noqa: A001 - the library's entry point, like io.open
    guest: str | Path,
    args: Sequence[str | int] = (),
    *,
    target: str = "kvm",
    capabilities: HostCapabilities | None = None,
    on_console: Callable[[str], None] | None = None,
    mem_size: int = layout.DEFAULT_MEM_SIZE,
) -> Session:
    """Boot ``guest`` (a bundled guest's name or an ELF path) stopped at its
    first instruction, under a debug session.

    ``target``: "kvm" (kvmbench's own VMM on /dev/kvm), "qemu" (QEMU TCG
    through its gdbstub) or "auto" (kvm where /dev/kvm is usable, else
    qemu). ``capabilities`` overrides the KVM host's probe (kvm only)."""
    if not isinstance(guest, (str, Path)):
        raise UsageError(f"a guest is a bundled guest's name or an ELF path, not {guest!r}")
    if isinstance(args, (str, bytes)) or not all(
            isinstance(a, (str, int)) and not isinstance(a, bool) for a in args):
        raise UsageError(f"guest arguments are a list of strings or numbers, not {args!r}")
    if target not in TARGETS:
        raise UsageError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "auto":
        target = "kvm" if _kvm_usable() else "qemu"
    image = resolve_image(guest)
    argv = [str(a) for a in args]
    if target == "qemu":
        from kvmbench.backends.qemu_target import open_qemu_guest

        return Session(open_qemu_guest(image, argv, mem_size=mem_size, on_console=on_console),
                       lambda: load_symbols(image), image)
    caps = capabilities if capabilities is not None else probe_host()
    machine = Machine.boot(image, argv, mem_size=mem_size, on_console=on_console)
    return Session(KvmTarget(machine, caps), lambda: load_symbols(image), image)


def attach(address: str, *, symbols: str | Path | None = None,
           on_console: Callable[[str], None] | None = None) -> Session:
    """A session over the guest behind any GDB remote stub at ``address``
    ("HOST:PORT" or "unix:PATH"), stopped where it stands; ``symbols`` is
    the guest's ELF (its symbols and DWARF), if you have it."""
    from kvmbench.backends.gdbremote.client import GdbRemoteClient
    from kvmbench.backends.gdbremote.target import GdbRemoteTarget
    from kvmbench.symbols.table import SymbolTable

    if not isinstance(address, str) or not address.strip():
        raise UsageError(f"a stub address is 'HOST:PORT' or 'unix:PATH', not {address!r}")
    image = Path(symbols) if symbols is not None else None
    if image is not None and not image.is_file():
        raise UsageError(f"{image}: no such ELF file")

    def console_text(text: bytes) -> None:
        if on_console is not None:
            on_console(text.decode("utf-8", "replace"))

    client = GdbRemoteClient.connect(address.strip(), on_console=console_text)
    try:
        target = GdbRemoteTarget(client, name=f"stub at {address.strip()}")
    except BaseException:
        client.close()
        raise
    loader = (lambda: load_symbols(image)) if image is not None else (lambda: SymbolTable([]))
    return Session(target, loader, image)


def linux(kernel: str | Path | None = None, initrd: str | Path | None = None, append: str = "",
          accel: str = "auto", smp: int = 1, memory: str = "512M",
          files: dict[str, str | Path] | None = None, **options: Any) -> "LinuxSession":
    """Boot a Linux kernel under QEMU (Debian's when ``kernel`` is None)
    and return a session stopped at its ready shell; ``files`` maps guest
    paths to host files put in its initramfs. The other options and the
    details: :func:`kvmbench.linux_session.linux`."""
    from kvmbench.linux_session import linux as boot  # QEMU and drgn only when asked for

    return boot(kernel, initrd, append, accel, smp, memory, files, **options)
