"""A writer of "newc" cpio archives, the format the kernel unpacks as its
initramfs.

Format (Documentation/driver-api/early-userspace/buffer-format.rst): each
entry is the magic ``070701``, thirteen 8-digit hexadecimal fields (ino,
mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
rdevminor, namesize counting the name's NUL, check = 0), the name and its
NUL padded to a multiple of 4 bytes, then the file's data padded likewise.
A symlink's data is its target. The archive ends with an entry named
``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from kvmbench.errors import UsageError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 4)


@dataclass
class CpioWriter:
    """Entries added in order; parent directories are added as needed."""

    mtime: int = 0
    _parts: list[bytes] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)
    _size: int = 0
    _next_ino: int = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._next_ino, mode, 0, 0, nlink, self.mtime, len(data),
            0, 0, 0, 0, len(encoded), 0,
        )
        self._next_ino += 1
        header = MAGIC + b"".join(b"%08X" % value for value in fields)
        chunk = header + encoded + _pad(len(header) + len(encoded)) + data + _pad(len(data))
        self._parts.append(chunk)
        self._size += len(chunk)

    @staticmethod
    def _name(path: str) -> str:
        clean = PurePosixPath("/", path)
        if ".." in clean.parts:
            raise UsageError(f"initramfs path {path!r} must not contain '..'")
        name = str(clean).lstrip("/")
        if not name:
            raise UsageError("an initramfs entry needs a path below /")
        return name

    def _parents(self, name: str) -> None:
        parent = PurePosixPath(name).parent
        missing = []
        while str(parent) not in (".", "") and str(parent) not in self._names:
            missing.append(str(parent))
            parent = parent.parent
        for directory in reversed(missing):
            self.add_directory(directory)

    def add_directory(self, path: str, mode: int = 0o755) -> None:
        name = self._name(path)
        if name in self._names:
            return
        self._parents(name)
        self._names.add(name)
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        name = self._claim(path)
        self._entry(name, stat.S_IFREG | (mode & 0o7777), data)

    def add_symlink(self, path: str, target: str) -> None:
        name = self._claim(path)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def _claim(self, path: str) -> str:
        name = self._name(path)
        if name in self._names:
            raise UsageError(f"initramfs path /{name} is given twice")
        self._parents(name)
        self._names.add(name)
        return name

    def __contains__(self, path: str) -> bool:
        return self._name(path) in self._names

    def getvalue(self) -> bytes:
        """The archive, trailer included."""
        trailer = CpioWriter(mtime=self.mtime, _next_ino=0)
        trailer._entry(TRAILER, 0, nlink=1)
        return b"".join(self._parts) + trailer._parts[0]
