"""Kernel images: the vmlinux inside a bzImage, found by the x86 boot
protocol's payload fields and unpacked with Python's own decoders, and
Debian's kernel in the per-user cache."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import subprocess
import warnings
from pathlib import Path

import pytest

from kvmbench.backends.linux import cache
from kvmbench.backends.linux.image import (
    KernelImageError,
    bzimage_release,
    debian_kernel,
    extract_vmlinux,
    has_pvh_note,
    kernel_image,
)

FAKE_ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64


def make_bzimage(payload: bytes, release: str = "6.9.0-test") -> bytes:
    """A file laid out as Documentation/arch/x86/boot.rst says a bzImage is:
    setup sectors with the header at 0x1f1, then the protected-mode code,
    whose payload_offset/payload_length locate the compressed kernel."""
    setup_sects = 3
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    version_at = 0x300
    version = release.encode() + b" (test@host) #1\0"
    image[version_at : version_at + len(version)] = version
    struct.pack_into("<H", image, 0x20E, version_at - 0x200)
    body = b"\x90" * 100 + payload + struct.pack("<I", len(FAKE_ELF))
    struct.pack_into("<II", image, 0x248, 100, len(payload) + 4)
    return bytes(image) + body


@pytest.mark.parametrize(
    "compress",
    [
        lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        gzip.compress,
        bz2.compress,
        lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    ],
    ids=["xz", "gzip", "bzip2", "lzma"],
)
def test_vmlinux_is_unpacked_from_each_compression(compress) -> None:
    assert extract_vmlinux(make_bzimage(compress(FAKE_ELF))) == FAKE_ELF


def test_release_comes_from_the_header() -> None:
    assert bzimage_release(make_bzimage(gzip.compress(FAKE_ELF), "6.1.0-57-amd64")) == "6.1.0-57-amd64"


def test_a_file_without_the_boot_header_is_refused() -> None:
    with pytest.raises(KernelImageError, match="HdrS"):
        extract_vmlinux(b"\0" * 4096)


def test_an_unknown_compression_is_named() -> None:
    with pytest.raises(KernelImageError, match="unknown compression"):
        extract_vmlinux(make_bzimage(b"QQQQQQQQ"))


def test_a_payload_that_is_not_an_elf_is_refused() -> None:
    with pytest.raises(KernelImageError, match="not an ELF"):
        extract_vmlinux(make_bzimage(gzip.compress(b"not a kernel")))


def test_unwritable_cache_home_falls_back_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory would go")
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        directory = cache.cache_dir("kernels")
    assert directory.is_dir() and str(directory).startswith(str(tmp_path / "tmp"))
    assert any("cannot be written" in str(w.message) for w in caught)


# -- Debian's kernel, from the cache `make linux-image` fills --------------


@pytest.fixture(scope="module")
def debian():
    try:
        return debian_kernel(fetch=False)
    except KernelImageError as exc:
        pytest.skip(str(exc))


def test_debian_vmlinux_is_the_bzimage_payload(debian) -> None:
    assert debian.bzimage is not None
    assert extract_vmlinux(debian.bzimage.read_bytes()) == debian.path.read_bytes()


def test_debian_vmlinux_has_the_pvh_note_readelf_shows(debian) -> None:
    notes = subprocess.run(["readelf", "-n", str(debian.path)], capture_output=True, text=True, check=True).stdout
    # readelf names Xen's type 18 (XEN_ELFNOTE_PHYS32_ENTRY) only by number.
    assert "(0x00000012)" in notes
    assert has_pvh_note(debian.path)


def test_debian_release_matches_its_package(debian) -> None:
    assert debian.release is not None and debian.package is not None
    assert debian.package.name.startswith(f"linux-image-{debian.release}_")


def test_no_kernel_means_debians(debian) -> None:
    assert kernel_image(None).path == debian.path


def test_a_users_bzimage_boots_as_its_extracted_vmlinux(debian) -> None:
    assert debian.bzimage is not None
    image = kernel_image(debian.bzimage)
    assert image.path != debian.bzimage and image.path.read_bytes()[:4] == b"\x7fELF"
    assert image.bzimage == debian.bzimage
