"""Counting guest instruction executions at full TCG speed.

``execcount.c`` (beside this file) is a QEMU TCG plugin, compiled here at
run time with gcc and cached by its source's hash. It counts executions of
the addresses in a table file that this module maps too: counts are read
while the guest runs, without a stop or a QMP round trip.

>>> counter = ExecCounter.create(directory)          # before QEMU starts
>>> QemuOptions(..., plugins=(counter.plugin_spec(),))
>>> slot = counter.add(address)                      # before or while it runs
>>> counter.count(address)
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kvmbench.backends.linux.cache import cache_dir, compile_c, content_hash
from kvmbench.backends.qemu import PluginSpec
from kvmbench.errors import KvmbenchError

MAGIC = int.from_bytes(b"KVBCOUNT", "little")
HEADER_WORDS = 8
_CAPACITY, _GENERATION, _USED, _TRANSLATIONS, _INSTRUMENTED = 1, 2, 3, 4, 5
DEFAULT_CAPACITY = 65536


class PluginError(KvmbenchError):
    """The counting plugin cannot be built or its table is full."""


def plugin_source() -> bytes:
    return (resources.files("kvmbench.backends.linux") / "plugin" / "execcount.c").read_bytes()


def build_plugin() -> Path:
    """The plugin's shared object, compiled once per source and compiler."""
    source = plugin_source()
    gcc = shutil.which("gcc")
    if gcc is None:
        raise PluginError("gcc not found: the counting plugin is compiled at run time")
    compiler = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    directory = cache_dir("plugin", content_hash(source, compiler))
    library = directory / "execcount.so"
    if library.exists():
        return library
    failed = compile_c(gcc, source, library, ["-shared", "-fPIC", "-O2", "-Wall", "-fvisibility=hidden"])
    if failed is not None:
        raise PluginError(f"compiling the counting plugin failed: {failed}")
    return library


@dataclass(frozen=True)
class CounterStats:
    """What the plugin reports about itself."""

    translations: int
    instrumented: int
    generation: int


class ExecCounter:
    """The table the plugin counts into: addresses in slots, a count per
    slot. One writer (this object); the plugin only adds to counts."""

    def __init__(self, path: Path, capacity: int, atomic: bool) -> None:
        self.path = path
        self.capacity = capacity
        self.atomic = atomic
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, (HEADER_WORDS + 2 * capacity) * 8, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        # SAFETY: the file was sized for the header and both arrays; the
        # views cover exactly those words.
        words = self._words = memoryview(self._map).cast("Q")
        self._header = words[:HEADER_WORDS]
        self._addresses = words[HEADER_WORDS : HEADER_WORDS + capacity]
        self._counts = words[HEADER_WORDS + capacity :]
        self._slots: dict[int, int] = {
            address: slot for slot, address in enumerate(self._addresses) if address
        }
        self._free = [slot for slot in range(capacity - 1, -1, -1) if not self._addresses[slot]]

    @classmethod
    def create(cls, directory: Path, capacity: int = DEFAULT_CAPACITY, *, atomic: bool = False) -> "ExecCounter":
        """A new, empty table in ``directory``. ``atomic`` counts exactly
        with several vCPUs running at once (slower: a call per hit)."""
        path = Path(directory) / "execcount.table"
        with open(path, "wb") as stream:
            stream.write(struct.pack("<8Q", MAGIC, capacity, 0, 0, 0, 0, 0, 0))
            stream.truncate((HEADER_WORDS + 2 * capacity) * 8)
        return cls(path, capacity, atomic)

    def plugin_spec(self) -> PluginSpec:
        """The ``-plugin`` argument that loads the plugin on this table."""
        args = [("table", str(self.path))]
        if self.atomic:
            args.append(("atomic", "on"))
        return PluginSpec(build_plugin(), tuple(args))

    def _publish(self) -> None:
        # Addresses are written before the generation moves; x86 keeps
        # stores in order, and the plugin reads the generation first.
        self._header[_USED] = len(self._slots)
        self._header[_GENERATION] = self._header[_GENERATION] + 1

    def add(self, *addresses: int) -> None:
        """Count these addresses too (from the next translation on: the
        plugin then has QEMU retranslate everything)."""
        added = False
        for address in addresses:
            if address in self._slots:
                continue
            if not address:
                raise PluginError("address 0 cannot be counted (it marks an empty slot)")
            if not self._free:
                raise PluginError(f"the counter table is full ({self.capacity} addresses)")
            slot = self._free.pop()
            self._counts[slot] = 0
            self._addresses[slot] = address
            self._slots[address] = slot
            added = True
        if added:
            self._publish()

    def remove(self, *addresses: int) -> None:
        """Stop counting these addresses (their counts are forgotten)."""
        removed = False
        for address in addresses:
            slot = self._slots.pop(address, None)
            if slot is None:
                continue
            self._addresses[slot] = 0
            self._free.append(slot)
            removed = True
        if removed:
            self._publish()

    def count(self, address: int) -> int:
        """Executions of ``address`` so far (0 if it is not counted)."""
        slot = self._slots.get(address)
        return 0 if slot is None else int(self._counts[slot])

    def counts(self) -> dict[int, int]:
        """Every counted address and its executions so far."""
        return {address: int(self._counts[slot]) for address, slot in self._slots.items()}

    def reset_counts(self) -> None:
        for slot in self._slots.values():
            self._counts[slot] = 0

    @property
    def addresses(self) -> list[int]:
        return list(self._slots)

    def stats(self) -> CounterStats:
        return CounterStats(
            int(self._header[_TRANSLATIONS]), int(self._header[_INSTRUMENTED]), int(self._header[_GENERATION])
        )

    def close(self) -> None:
        for view in (self._header, self._addresses, self._counts, self._words):
            view.release()
        self._map.close()
