"""Where kvmbench keeps what it builds or fetches for Linux guests.

Kernels, compiled inits, initramfs archives, snapshots and plugins live in
``$XDG_CACHE_HOME/kvmbench/linux`` (``~/.cache/kvmbench/linux``). A HOME
that cannot be written falls back to a per-user directory under the system's
temporary directory, and says so once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

from kvmbench.errors import KvmbenchError

#: Overrides the cache's location (tests, CI, a shared machine).
CACHE_ENV = "KVMBENCH_CACHE"


class CacheError(KvmbenchError):
    """No directory for kvmbench's Linux cache could be written."""


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def cache_dir(*parts: str) -> Path:
    """The Linux cache directory (created), or its subdirectory ``parts``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        base = Path(override) / "linux"
        if not _writable(base):
            raise CacheError(f"{CACHE_ENV}={override} cannot be written")
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvmbench" / "linux"
        base = home
        if not _writable(home):
            base = Path(tempfile.gettempdir()) / f"kvmbench-{os.getuid()}" / "linux"
            if not _writable(base):
                raise CacheError(f"neither {home} nor {base} can be written: set {CACHE_ENV} to a writable directory")
            warnings.warn(f"{home} cannot be written; kvmbench caches Linux images in {base}", stacklevel=2)
    directory = base.joinpath(*parts)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def content_hash(*items: bytes | str | Path | Iterable[bytes | str | Path]) -> str:
    """A short hex digest of bytes, strings and files' contents, in order.

    Files are hashed by content (not by name or date), so a rebuilt but
    identical input keeps its cache entry."""
    digest = hashlib.sha256()

    def feed(item: bytes | str | Path | Iterable[bytes | str | Path]) -> None:
        if isinstance(item, bytes):
            digest.update(len(item).to_bytes(8, "little") + item)
        elif isinstance(item, str):
            feed(item.encode())
        elif isinstance(item, Path):
            file_digest = hashlib.sha256()
            with open(item, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    file_digest.update(block)
            feed(file_digest.digest())
        else:
            for sub in item:
                feed(sub)

    for item in items:
        feed(item)
    return digest.hexdigest()[:20]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` so that no reader ever sees it half written."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def compile_c(gcc: str, source: bytes, output: Path, flags: list[str]) -> str | None:
    """Compile C ``source`` into ``output`` with ``gcc flags``, through files
    of this process's own (others may be building the same cache entry at
    the same time); None when it worked, else the compiler's last line."""
    own = os.getpid()
    source_path = output.with_name(f".{output.name}.{own}.c")
    partial = output.with_name(f".{output.name}.{own}.part")
    source_path.write_bytes(source)
    try:
        result = subprocess.run([gcc, *flags, "-o", str(partial), str(source_path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return (result.stderr.strip().splitlines() or ["no output"])[-1]
        os.replace(partial, output)
        return None
    finally:
        source_path.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
