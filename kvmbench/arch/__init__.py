"""Per-architecture facts. Each arch module exports the same names (NAME,
PROFILE, PC_REGISTER, GDB_REGISTERS, ...); :func:`current` picks the host's."""

from __future__ import annotations

import platform
from types import ModuleType

from kvmbench.errors import HostUnsupported

__all__ = ["current"]


def current(machine: str | None = None) -> ModuleType:
    """The arch module for ``machine`` (default: this host's ``uname -m``).

    Only x86-64 has a module so far; other machines raise HostUnsupported.
    """
    machine = machine or platform.machine()
    if machine in ("x86_64", "amd64", "AMD64"):
        from kvmbench.arch import x86_64

        return x86_64
    raise HostUnsupported(f"kvmbench supports x86-64 hosts only, not {machine}")
