"""The initramfs archive writer, read back by busybox's cpio (a reference
reader of the newc format) and checked against the format's rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kvmbench.backends.linux.cpio import CpioWriter
from kvmbench.errors import UsageError

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed (make debian)")


def sample() -> bytes:
    writer = CpioWriter()
    writer.add_file("/init", b"#!/bin/sh\n", 0o755)
    writer.add_file("/etc/motd", b"hello\n")
    writer.add_symlink("/bin/sh", "/bin/busybox")
    writer.add_directory("/tmp", 0o1777)
    return writer.getvalue()


@needs_busybox
def test_busybox_cpio_lists_every_entry_with_its_parents(tmp_path: Path) -> None:
    listing = subprocess.run([BUSYBOX, "cpio", "-t"], input=sample(), capture_output=True, check=True).stdout
    assert listing.decode().split() == ["init", "etc", "etc/motd", "bin", "bin/sh", "tmp"]


@needs_busybox
def test_busybox_cpio_extracts_contents_modes_and_links(tmp_path: Path) -> None:
    subprocess.run([BUSYBOX, "cpio", "-i", "-d"], input=sample(), cwd=tmp_path, capture_output=True, check=True)
    assert (tmp_path / "etc" / "motd").read_bytes() == b"hello\n"
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin" / "sh").is_symlink()
    assert str((tmp_path / "bin" / "sh").readlink()) == "/bin/busybox"


def test_every_header_and_data_is_4_byte_aligned() -> None:
    data = sample()
    offset = 0
    names = []
    while True:
        assert offset % 4 == 0
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        assert data[name_start + namesize - 1] == 0
        names.append(name)
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        offset = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            break
    assert offset == len(data)
    assert names[-1] == "TRAILER!!!"


def test_a_path_given_twice_is_refused() -> None:
    writer = CpioWriter()
    writer.add_file("/a", b"1")
    with pytest.raises(UsageError, match="given twice"):
        writer.add_file("/a", b"2")


def test_paths_may_not_climb_out_of_the_root() -> None:
    with pytest.raises(UsageError, match=r"\.\."):
        CpioWriter().add_file("/../etc/passwd", b"")
