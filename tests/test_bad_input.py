"""Bad input of every kind gets a one-line error, quickly, and leaves the
session, the process and the guest's memory as they were (issue 9, part 4).

The engine's own argument checks are in tests/test_engine_rules.py; the
notebook's in tests/test_jupyter_commands.py."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HAVE_KVM, NO_KVM_REASON, assemble

import kvmbench
from kvmbench.backends.kvm import probe
from kvmbench.backends.kvm.console import Console
from kvmbench.engine.model import RunState, StopReason
from kvmbench.errors import GuestMemoryError, HostUnsupported, KvmbenchError, SessionStateError
from kvmbench.guests import guest_path

needs_kvm = pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM_REASON)
HELLO = guest_path("hello").read_bytes()


def _patched(offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(HELLO)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _phdr(field: int) -> int:
    (phoff,) = struct.unpack_from("<Q", HELLO, 0x20)
    return phoff + field


MALFORMED = {
    "truncated-header": (HELLO[:40], "shorter than an ELF header"),
    "not-elf": (b"#!/bin/sh\necho hello\n" + bytes(64), "no ELF magic"),
    "big-endian": (_patched(5, "<B", 2), "little-endian"),
    "absurd-phnum": (_patched(0x38, "<H", 65535), "program headers"),
    "no-phdrs": (_patched(0x38, "<H", 0), "program headers"),
    "phoff-outside": (_patched(0x20, "<Q", 1 << 40), "outside the file"),
    "filesz-over-memsz": (_patched(_phdr(32), "<Q", 1 << 20), "more file bytes"),
    "segment-past-file": (_patched(_phdr(8), "<Q", 1 << 30), "past the end of the file"),
    "entry-outside": (_patched(0x18, "<Q", 0x7000000), "entry point"),
    "segment-below-image": (_patched(_phdr(24), "<Q", 0x1000), "does not fit"),
}


@needs_kvm
@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_elf_is_refused_in_well_under_a_second(tmp_path: Path, caps, case: str) -> None:  # type: ignore[no-untyped-def]
    data, message = MALFORMED[case]
    image = tmp_path / f"{case}.elf"
    image.write_bytes(data)
    start = time.monotonic()
    with pytest.raises(KvmbenchError, match=message) as error:
        kvmbench.open(image, capabilities=caps)
    assert time.monotonic() - start < 1.0
    assert "\n" not in str(error.value)


@needs_kvm
def test_a_directory_is_not_an_image(tmp_path: Path, caps) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KvmbenchError, match="not a regular file"):
        kvmbench.open(tmp_path, capabilities=caps)


@needs_kvm
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, caps) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "guest.elf"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(KvmbenchError, match="not a regular file"):
        kvmbench.open(fifo, capabilities=caps)
    assert time.monotonic() - start < 1.0


@needs_kvm
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_image_says_so(tmp_path: Path, caps) -> None:  # type: ignore[no-untyped-def]
    image = tmp_path / "guest.elf"
    image.write_bytes(HELLO)
    image.chmod(0)
    with pytest.raises(KvmbenchError, match="ermission"):
        kvmbench.open(image, capabilities=caps)


@needs_kvm
@pytest.mark.parametrize("size", [0, 4095, 1 << 12, 3 << 40, -4096, "32M", 2.5])
def test_impossible_memory_sizes_are_refused(caps, size: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestMemoryError):
        kvmbench.open("hello", capabilities=caps, mem_size=size)  # type: ignore[arg-type]


@needs_kvm
@pytest.mark.parametrize("args", ["20", [None], [b"20"], [True]])
def test_guest_arguments_of_the_wrong_type_are_refused(caps, args: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KvmbenchError, match="guest arguments"):
        kvmbench.open("fib", args, capabilities=caps)  # type: ignore[arg-type]


# --- guests that fault or halt -----------------------------------------------------------

_FAULT_ON_A_DEAD_STACK = """
    mov $0x3ff0000, %rsp     # inside the identity map, beyond guest memory
    ud2
"""


@needs_kvm
def test_a_fault_with_an_unusable_stack_is_a_crash_and_nothing_runs_past_it(
        open_guest, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = open_guest(str(assemble(tmp_path, _FAULT_ON_A_DEAD_STACK)))
    stop = s.cont()
    assert stop.reason is StopReason.CRASHED and s.state is RunState.CRASHED, stop.describe()
    with pytest.raises(SessionStateError, match="boot it again"):
        s.cont()
    assert s.regs.rsp == 0x3FF0000 - 0 or s.regs.rsp <= 0x3FF0000  # still inspectable


# --- the command line ----------------------------------------------------------------------


def _kvmbench(*args: str | bytes, env: dict[str, str] | None = None,
              **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvmbench", *args], capture_output=True,
                          timeout=60, env=env, **kw)  # type: ignore[call-overload]


@needs_kvm
def test_a_guest_argument_that_is_not_utf8_reaches_the_guest_as_its_bytes() -> None:
    result = _kvmbench("run", "fib", b"\xff\xfe")
    # fib parses its argument as a number; bytes that are none give its default
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr


def test_a_guest_name_that_is_not_utf8_is_a_one_line_error() -> None:
    result = _kvmbench("run", b"/tmp/no-such-\xff-guest")
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"no such file" in result.stderr


@needs_kvm
def test_a_closed_stdout_ends_quietly() -> None:
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run([sys.executable, "-m", "kvmbench", "run", "counter", "200"],
                                stdout=writer, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(writer)
    assert result.returncode == 141
    assert result.stderr == b""


@needs_kvm
def test_an_unwritable_cache_only_warns_and_the_probe_still_answers(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache directory should be")
    result = _kvmbench("probe", "--json", env={"XDG_CACHE_HOME": str(cache), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert b"not cached" in result.stderr and b"Traceback" not in result.stderr


@needs_kvm
def test_no_home_at_all_still_probes(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # neither HOME nor XDG_CACHE_HOME
    result = _kvmbench("probe", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_host_without_a_usable_kvm_is_never_cached(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kvmbench.backends.kvm import system

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(probe, "host_identity", lambda: "test host without kvm")
    monkeypatch.setattr(system, "KVM_DEVICE", str(tmp_path / "no-kvm"))
    with pytest.raises(HostUnsupported, match="does not exist"):
        probe.probe_host(refresh=True)
    assert not list(tmp_path.rglob("probe-*"))


# --- the console ---------------------------------------------------------------------------


def test_the_console_keeps_a_bounded_tail_and_streams_everything() -> None:
    streamed: list[str] = []
    console = Console(streamed.append, limit=64)
    for i in range(100):
        console.write(f"line {i:03}\n".encode())
    assert len(console.text) <= 64 and console.text.endswith("line 099\n")
    assert console.dropped == 100 * 9 - len(console.text.encode())
    assert "".join(streamed).count("\n") == 100


def test_a_partial_line_is_shown_at_a_stop() -> None:
    streamed: list[str] = []
    console = Console(streamed.append)
    console.write(b"prompt> ")
    assert streamed == []
    console.flush()  # what a stop does
    assert streamed == ["prompt> "] and console.text == "prompt> "
