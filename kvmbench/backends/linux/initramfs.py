"""The initramfs of a kvmbench Linux guest, built at run time.

It holds kvmbench's own init (init/init.c, compiled here with
``gcc -static -O2`` and cached by the source's hash), Debian's static
busybox with a symlink for each of its applets, kernel modules taken from
the kernel's package on request, and the user's own files
(``files={"/guest/path": "host/path"}``). Archives are cached by the hash of
everything in them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from kvmbench.backends.linux.cache import atomic_write, cache_dir, compile_c, content_hash
from kvmbench.backends.linux.cpio import CpioWriter
from kvmbench.errors import KvmbenchError

BUSYBOX = Path("/bin/busybox")
#: Where modules asked for by name land in the guest (``insmod /lib/modules/NAME.ko``).
MODULE_DIR = "/lib/modules"


class InitramfsError(KvmbenchError):
    """The initramfs cannot be built (no gcc, no static busybox, a missing file)."""


def init_source() -> bytes:
    return (resources.files("kvmbench.backends.linux") / "init" / "init.c").read_bytes()


def build_init() -> Path:
    """kvmbench's init, compiled once per source text and compiler."""
    source = init_source()
    gcc = shutil.which("gcc")
    if gcc is None:
        raise InitramfsError("gcc not found: the Linux guest's init is compiled at run time (apt-get install gcc)")
    compiler = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    directory = cache_dir("init", content_hash(source, compiler))
    binary = directory / "init"
    if binary.exists():
        return binary
    failed = compile_c(gcc, source, binary, ["-static", "-O2", "-Wall"])
    if failed is not None:
        raise InitramfsError(f"compiling the guest's init failed (static glibc: apt-get install libc6-dev): {failed}")
    return binary


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Paths (``bin/sh``, ``usr/bin/awk``) of every applet busybox provides."""
    result = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True)
    if result.returncode != 0:
        raise InitramfsError(f"{busybox} --list-full failed")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def check_busybox(busybox: Path = BUSYBOX) -> None:
    """The initramfs has no shared libraries: busybox must be static (no
    PT_INTERP program header naming a dynamic loader)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    if not busybox.exists():
        raise InitramfsError(f"{busybox} not found: install Debian's busybox-static (make debian)")
    try:
        with open(busybox, "rb") as stream:
            dynamic = any(segment.header.p_type == "PT_INTERP" for segment in ELFFile(stream).iter_segments())
    except ELFError:
        raise InitramfsError(f"{busybox} is not an ELF executable") from None
    if dynamic:
        raise InitramfsError(f"{busybox} is dynamically linked: install Debian's busybox-static")


@dataclass(frozen=True)
class InitramfsSpec:
    """What goes into the archive besides the init and busybox."""

    files: Mapping[str, str | os.PathLike[str]] = field(default_factory=dict)
    modules: Mapping[str, Path] = field(default_factory=dict)

    def host_files(self) -> list[tuple[str, Path]]:
        pairs = []
        for guest, host in sorted(self.files.items()):
            path = Path(host).expanduser()
            if not path.is_file():
                raise InitramfsError(f"files: {host} (for {guest}) is not a file")
            if not guest.startswith("/"):
                raise InitramfsError(f"files: the guest path {guest!r} must be absolute")
            pairs.append((guest, path))
        return pairs


def build_initramfs(spec: InitramfsSpec = InitramfsSpec()) -> Path:
    """The archive for ``spec`` (built, or found in the cache)."""
    check_busybox()
    init = build_init()
    files = spec.host_files()
    modules = sorted(spec.modules.items())
    key = content_hash(
        init,
        BUSYBOX,
        [item for guest, host in files for item in (guest, host, str(os.stat(host).st_mode & 0o777))],
        [item for name, path in modules for item in (name, path)],
    )
    directory = cache_dir("initramfs")
    archive = directory / f"{key}.cpio"
    if archive.exists():
        return archive
    writer = CpioWriter()
    for path in ("dev", "proc", "sys", "tmp", "root", "etc"):
        writer.add_directory(path, 0o1777 if path == "tmp" else 0o755)
    writer.add_file("/init", init.read_bytes(), 0o755)
    writer.add_file("/bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in busybox_applets():
        if f"/{applet}" not in writer:
            writer.add_symlink(f"/{applet}", "/bin/busybox")
    for name, path in modules:
        writer.add_file(f"{MODULE_DIR}/{name}.ko", path.read_bytes(), 0o644)
    for guest, host in files:
        if guest in writer:
            raise InitramfsError(f"files: {guest} would replace a file kvmbench's guest needs")
        writer.add_file(guest, host.read_bytes(), os.stat(host).st_mode & 0o777)
    atomic_write(archive, writer.getvalue())
    return archive


def combined_initrd(ours: Path, theirs: Sequence[Path]) -> Path:
    """The user's own initrd archives followed by ours, in one file.

    The kernel unpacks concatenated archives in order, later entries
    replacing earlier ones (Documentation/driver-api/early-userspace/
    buffer-format.rst), so kvmbench's /init wins and the user's files stay."""
    if not theirs:
        return ours
    key = content_hash(ours, list(theirs))
    combined = cache_dir("initramfs") / f"{key}-combined.cpio"
    if not combined.exists():
        parts = []
        for path in theirs:
            data = Path(path).read_bytes()
            parts.append(data + b"\0" * (-len(data) % 4))
        atomic_write(combined, b"".join(parts) + ours.read_bytes())
    return combined
