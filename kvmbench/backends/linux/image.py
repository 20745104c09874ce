"""Kernel images: Debian's current kernel fetched into the cache, a user's
own bzImage or vmlinux, and the uncompressed vmlinux QEMU boots fastest.

QEMU boots an ELF kernel with a PVH note directly (``-kernel vmlinux``),
skipping the bzImage's real-mode setup and self-decompression: measured
here 3.5-5.3 s to init on TCG against 11-12.5 s for Debian's bzImage. A
bzImage holds that vmlinux compressed; :func:`extract_vmlinux` takes it out
by the x86 boot protocol's own fields (Documentation/arch/x86/boot.rst).

Run as ``python -m kvmbench.backends.linux.image`` (``make linux-image``) to
fill the cache on a fresh machine.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from kvmbench.backends.linux.cache import atomic_write, cache_dir, content_hash
from kvmbench.errors import KvmbenchError

#: Debian's metapackage that depends on the current kernel's package.
DEBIAN_METAPACKAGE = "linux-image-amd64"

ELF_MAGIC = b"\x7fELF"
# Boot protocol header fields (Documentation/arch/x86/boot.rst, "The Real-Mode
# Kernel Header"): offsets into the bzImage.
_SETUP_SECTS = 0x1F1
_HEADER_MAGIC = 0x202  # "HdrS"
_VERSION = 0x206
_KERNEL_VERSION = 0x20E  # pointer to the version string, minus 0x200
_PAYLOAD_OFFSET = 0x248  # protocol 2.08+, from the protected-mode code's start
_PAYLOAD_LENGTH = 0x24C


class KernelImageError(KvmbenchError):
    """A kernel image that cannot be fetched, read or unpacked."""


@dataclass(frozen=True)
class KernelImage:
    """A kernel to boot: ``path`` is what QEMU gets (the vmlinux when there
    is one), ``bzimage`` the compressed image it came from, if any."""

    path: Path
    bzimage: Path | None = None
    release: str | None = None
    config: Path | None = None
    package: Path | None = None
    #: The uncompressed kernel ELF, when there is one (it may not be ``path``).
    vmlinux: Path | None = None

    @property
    def is_elf(self) -> bool:
        with open(self.path, "rb") as stream:
            return stream.read(4) == ELF_MAGIC


# -- the bzImage's payload --------------------------------------------------


def bzimage_release(image: bytes) -> str | None:
    """The kernel release a bzImage names in its header ("6.1.0-57-amd64")."""
    if len(image) < 0x210 or image[_HEADER_MAGIC : _HEADER_MAGIC + 4] != b"HdrS":
        return None
    pointer = struct.unpack_from("<H", image, _KERNEL_VERSION)[0]
    if not pointer:
        return None
    start = pointer + 0x200
    text = image[start : start + 256].split(b"\0", 1)[0].decode("ascii", errors="replace")
    return text.split()[0] if text else None


def _payload(image: bytes) -> bytes:
    if len(image) < 0x250 or image[_HEADER_MAGIC : _HEADER_MAGIC + 4] != b"HdrS":
        raise KernelImageError("not a bzImage: no 'HdrS' boot protocol header at 0x202")
    version = struct.unpack_from("<H", image, _VERSION)[0]
    if version < 0x208:
        raise KernelImageError(
            f"boot protocol {version >> 8}.{version & 0xff} has no payload fields (2.08 added them)"
        )
    setup_sects = image[_SETUP_SECTS] or 4  # 0 means 4, for compatibility
    offset, length = struct.unpack_from("<II", image, _PAYLOAD_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    if not length or start + length > len(image):
        raise KernelImageError("the bzImage's payload fields point outside the file")
    return image[start : start + length]


def _decompress(payload: bytes) -> bytes:
    # The payload is the compressed vmlinux followed by its uncompressed size
    # (scripts/Makefile.lib size_append); each decoder stops at its stream's end.
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x5d\x00\x00"):
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(payload)
    if payload.startswith(b"BZh"):
        return bz2.BZ2Decompressor().decompress(payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
        except ImportError:
            raise KernelImageError(
                "this bzImage is zstd-compressed; Python before 3.14 cannot unpack it: boot the bzImage"
            ) from None
        return zstd.ZstdDecompressor().decompress(payload)  # type: ignore[no-any-return]
    if payload.startswith((b"\x02\x21\x4c\x18", b"\x89LZO")):
        raise KernelImageError("this bzImage is LZ4/LZO-compressed, which Python cannot unpack: boot the bzImage")
    if payload.startswith(ELF_MAGIC):
        return payload  # CONFIG_KERNEL_UNCOMPRESSED
    raise KernelImageError(f"unknown compression of the bzImage's payload (starts {payload[:6].hex()})")


def extract_vmlinux(image: bytes) -> bytes:
    """The uncompressed vmlinux ELF inside a bzImage."""
    try:
        vmlinux = _decompress(_payload(image))
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
        raise KernelImageError(f"the bzImage's payload does not decompress: {exc}") from None
    if not vmlinux.startswith(ELF_MAGIC):
        raise KernelImageError("the bzImage's payload is not an ELF vmlinux")
    return vmlinux


def has_pvh_note(vmlinux: Path) -> bool:
    """Whether QEMU can boot this ELF directly: it carries a Xen ELF note
    of type XEN_ELFNOTE_PHYS32_ENTRY (18), the PVH entry point."""
    from elftools.elf.elffile import ELFFile

    with open(vmlinux, "rb") as stream:
        for segment in ELFFile(stream).iter_segments():
            if segment.header.p_type != "PT_NOTE":
                continue
            for note in segment.iter_notes():
                if note["n_name"] == "Xen" and note["n_type"] in (18, "NT_XEN_ELFNOTE_PHYS32_ENTRY"):
                    return True
    return False


# -- Debian's kernel --------------------------------------------------------


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KernelImageError(f"{argv[0]} not found: fetching Debian's kernel needs apt and dpkg") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise KernelImageError(f"{' '.join(argv[:2])} failed: {last}")
    return result.stdout


def debian_kernel_package() -> str:
    """The package ``linux-image-amd64`` depends on now, e.g. linux-image-6.1.0-57-amd64."""
    text = _run(["apt-cache", "depends", DEBIAN_METAPACKAGE])
    for line in text.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if match:
            return match.group(1)
    raise KernelImageError(
        f"apt knows no {DEBIAN_METAPACKAGE}: run 'apt-get update' (make linux-image does)"
    )


def _cached(directory: Path) -> KernelImage | None:
    vmlinux, bzimage = directory / "vmlinux", directory / "vmlinuz"
    if not (vmlinux.is_file() and bzimage.is_file()):
        return None
    release = (directory / "release").read_text().strip() if (directory / "release").exists() else None
    config = directory / "config"
    debs = sorted(directory.glob("*.deb"))
    return KernelImage(
        vmlinux, bzimage, release, config if config.exists() else None, debs[0] if debs else None, vmlinux
    )


def debian_kernel(*, fetch: bool = True, progress: bool = False) -> KernelImage:
    """Debian's current kernel from the cache, fetched first if it is not there.

    ``apt-get download`` fetches the package into the cache (no root
    needed), dpkg-deb unpacks its /boot, and the vmlinux is extracted from
    the bzImage. The .deb is kept: its /lib/modules has the kernel's modules.
    """
    package = debian_kernel_package() if fetch else None
    base = cache_dir("kernels")
    if package is None:
        for directory in sorted(base.glob("linux-image-*"), reverse=True):
            image = _cached(directory)
            if image is not None:
                return image
        raise KernelImageError("no Debian kernel in the cache: run 'make linux-image'")
    directory = base / package
    image = _cached(directory)
    if image is not None:
        return image
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        work = Path(tmp)
        # apt drops privileges to _apt for downloads; let it write here.
        os.chmod(work, 0o777)
        if progress:
            print(f"kvmbench: downloading {package} ...", file=sys.stderr, flush=True)
        _run(["apt-get", "download", "-q", package], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise KernelImageError(f"apt-get download {package} left no .deb")
        deb = directory / debs[0].name
        shutil.move(str(debs[0]), deb)
    if progress:
        print(f"kvmbench: unpacking {deb.name} ...", file=sys.stderr, flush=True)
    members = _extract_boot(deb, directory)
    bzimage = members.get("vmlinuz")
    if bzimage is None:
        raise KernelImageError(f"{deb.name} has no /boot/vmlinuz-*")
    data = bzimage.read_bytes()
    release = bzimage_release(data) or bzimage.name.removeprefix("vmlinuz-")
    if progress:
        print("kvmbench: extracting vmlinux from the bzImage ...", file=sys.stderr, flush=True)
    atomic_write(directory / "vmlinux", extract_vmlinux(data))
    if "config" in members:
        os.replace(members["config"], directory / "config")
    (directory / "release").write_text(release + "\n")
    os.replace(bzimage, directory / "vmlinuz")
    image = _cached(directory)
    assert image is not None
    return image


def _fsys_tarfile(deb: Path) -> subprocess.Popen[bytes]:
    """dpkg-deb streaming a package's files as a tar archive. Its stderr
    is dropped: it complains of a broken pipe when we stop reading early."""
    return subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )


def _extract_boot(deb: Path, directory: Path) -> dict[str, Path]:
    """/boot/{vmlinuz,config}-* from a kernel .deb, by kind."""
    found: dict[str, Path] = {}
    with _fsys_tarfile(deb) as dpkg:
        assert dpkg.stdout is not None
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not name.startswith("boot/") or not member.isfile():
                    continue
                kind = Path(name).name.split("-", 1)[0]
                if kind not in ("vmlinuz", "config"):
                    continue
                source = tar.extractfile(member)
                assert source is not None
                target = directory / f".{kind}.part"
                with open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                found[kind] = target
                if len(found) == 2:
                    break
        dpkg.stdout.close()
    if dpkg.returncode not in (0, None, -13):  # SIGPIPE when we stop reading is fine
        raise KernelImageError(f"dpkg-deb could not read {deb.name} (status {dpkg.returncode})")
    return found


def extract_modules(image: KernelImage, names: list[str]) -> dict[str, Path]:
    """Kernel modules by name ("virtio_console") from the kernel's .deb,
    unpacked into the cache; raises if one is not in the package."""
    if image.package is None or image.release is None:
        raise KernelImageError("modules come from Debian's kernel package; this kernel has none")
    directory = cache_dir("kernels", image.package.parent.name, "modules")
    wanted = {name.replace("-", "_"): name for name in names}
    found = {name: directory / f"{name}.ko" for name in wanted if (directory / f"{name}.ko").exists()}
    if len(found) < len(wanted):
        with _fsys_tarfile(image.package) as dpkg:
            assert dpkg.stdout is not None
            with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
                for member in tar:
                    if not member.name.endswith(".ko"):
                        continue
                    name = Path(member.name).name[:-3].replace("-", "_")
                    if name in wanted and name not in found:
                        source = tar.extractfile(member)
                        assert source is not None
                        atomic_write(directory / f"{name}.ko", source.read())
                        found[name] = directory / f"{name}.ko"
    missing = [wanted[name] for name in wanted if name not in found]
    if missing:
        raise KernelImageError(f"{image.package.name} has no module {', '.join(missing)}")
    return {wanted[name]: path for name, path in found.items()}


def debian_debug_vmlinux(image: KernelImage, *, progress: bool = False) -> Path:
    """The vmlinux with DWARF for Debian's kernel ``image``, from its -dbg
    package (about 860 MB, fetched on request only: ``make linux-debug``).
    Only the one file is unpacked into the cache; the package is not kept."""
    if image.package is None or image.release is None:
        raise KernelImageError("debug info comes from Debian's -dbg package; this kernel is not Debian's")
    directory = image.package.parent
    target = directory / "vmlinux.debug"
    if target.exists():
        return target
    package = f"linux-image-{image.release}-dbg"
    member = f"usr/lib/debug/boot/vmlinux-{image.release}"
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o777)
        if progress:
            print(f"kvmbench: downloading {package} (large) ...", file=sys.stderr, flush=True)
        _run(["apt-get", "download", "-q", package], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise KernelImageError(f"apt-get download {package} left no .deb")
        partial = directory / ".vmlinux.debug.part"
        with _fsys_tarfile(debs[0]) as dpkg:
            assert dpkg.stdout is not None
            with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
                for entry in tar:
                    if entry.name.removeprefix("./") != member or not entry.isfile():
                        continue
                    source = tar.extractfile(entry)
                    assert source is not None
                    with open(partial, "wb") as out:
                        copied = 0
                        for block in iter(lambda: source.read(1 << 22), b""):
                            out.write(block)
                            copied += len(block)
                            if progress:
                                bar = "#" * int(40 * copied / max(entry.size, 1))
                                print(f"\rkvmbench: unpacking vmlinux [{bar:40s}] {copied >> 20} MiB",
                                      end="", file=sys.stderr, flush=True)
                    if progress:
                        print(file=sys.stderr)
                    break
            dpkg.stdout.close()
    if not partial.exists():
        raise KernelImageError(f"{package} has no /{member}")
    os.replace(partial, target)
    return target


def has_dwarf(elf: Path) -> bool:
    """Whether an ELF file carries DWARF (a .debug_info section)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(elf, "rb") as stream:
            return ELFFile(stream).get_section_by_name(".debug_info") is not None
    except (OSError, ELFError):
        return False


def cached_debug_vmlinux(image: KernelImage) -> Path | None:
    """The vmlinux with DWARF for ``image`` if this machine has it: the
    kernel's own ELF when it was built with debug info, or Debian's -dbg
    vmlinux already in the cache (never fetched here: ``make linux-debug``)."""
    if image.vmlinux is not None and has_dwarf(image.vmlinux):
        return image.vmlinux
    if image.package is not None:
        debug = image.package.parent / "vmlinux.debug"
        if debug.exists():
            return debug
    return None


# -- a user's own kernel ----------------------------------------------------


def kernel_image(path: str | os.PathLike[str] | None) -> KernelImage:
    """The kernel to boot for ``path``: Debian's (None), a vmlinux ELF as is,
    or a bzImage whose vmlinux is extracted into the cache (keyed by its
    content) and booted instead when it carries a PVH note."""
    if path is None:
        return debian_kernel(fetch=False) if _debian_cached() else debian_kernel()
    source = Path(path).expanduser()
    try:
        with open(source, "rb") as stream:
            head = stream.read(0x260)
    except OSError as exc:
        raise KernelImageError(f"kernel {source}: {exc.strerror or exc}") from None
    if head.startswith(ELF_MAGIC):
        if not has_pvh_note(source):
            raise KernelImageError(
                f"{source} is an ELF without a PVH note (CONFIG_PVH): QEMU cannot boot it; give its bzImage"
            )
        return KernelImage(source, vmlinux=source)
    data = source.read_bytes()
    release = bzimage_release(data)
    directory = cache_dir("kernels", "user-" + content_hash(data))
    vmlinux = directory / "vmlinux"
    if not vmlinux.exists():
        try:
            atomic_write(vmlinux, extract_vmlinux(data))
        except KernelImageError:
            if release is None:
                raise
            return KernelImage(source, source, release)  # boots, just slower
    if not has_pvh_note(vmlinux):
        return KernelImage(source, source, release, vmlinux=vmlinux)
    return KernelImage(vmlinux, source, release, vmlinux=vmlinux)


def _debian_cached() -> bool:
    """Whether the cache holds Debian's kernel: then no apt query is made."""
    base = cache_dir("kernels")
    return any(_cached(d) is not None for d in base.glob("linux-image-*"))


def main(argv: list[str] | None = None) -> int:
    """``make linux-image``: fetch Debian's current kernel into the cache;
    with ``--debug`` (``make linux-debug``) also its vmlinux with DWARF."""
    args = sys.argv[1:] if argv is None else argv
    try:
        image = debian_kernel(progress=True)
        print(f"kvmbench: Debian kernel {image.release}: {image.path}")
        if "--debug" in args:
            print(f"kvmbench: its debug info: {debian_debug_vmlinux(image, progress=True)}")
    except KvmbenchError as exc:
        print(f"kvmbench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
