"""target.xml: the x86-64 layout as gdb numbers it, our description as
real gdb reads it, and descriptions from stubs (includes, numbering,
hostile documents)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmbench.errors import RspError
from kvmbench.rsp.layout import SEGMENTS_FEATURE, SSE_FEATURE, X86_64, Register, RegisterLayout, x86_64_layout
from kvmbench.rsp.target_xml import build_target_xml, parse_target_xml

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")


def gdb_remote_registers(xml: Path) -> list[tuple[str, int, int, int]]:
    """(name, remote number, g offset, size) of every register gdb takes
    from the description ``xml`` (``maint print remote-registers``)."""
    out = subprocess.run(
        ["gdb", "-nx", "-batch", "-ex", f"set tdesc filename {xml}", "-ex", "maint print remote-registers"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        # Name Nr Rel Offset Size Type Rmt-Nr g/G-Offset (rows gdb keeps no remote number for are shorter).
        if len(fields) == 8 and fields[1].isdigit() and re.fullmatch(r"\d+", fields[6]):
            rows.append((fields[0], int(fields[6]), int(fields[7]), int(fields[4])))
    return sorted(rows, key=lambda r: r[1])


@needs_gdb
@pytest.mark.parametrize("segments", [True, False])
def test_gdb_reads_our_description_as_our_layout(tmp_path: Path, segments: bool) -> None:
    layout = x86_64_layout(segments=segments)
    xml = tmp_path / "target.xml"
    xml.write_bytes(build_target_xml(layout))
    ours = [(r.name, r.regnum, layout.g_offset(r.name), r.size) for r in layout.registers]
    assert gdb_remote_registers(xml) == ours


def test_x86_64_layout_is_gdbs_order_and_sizes() -> None:
    names = X86_64.names
    assert names[:17] == ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)), "rip")
    assert names[17:24] == ("eflags", "cs", "ss", "ds", "es", "fs", "gs")
    assert X86_64.get("st0").regnum == 24 and X86_64.get("st0").size == 10
    assert X86_64.get("fop").regnum == 39
    assert X86_64.get("xmm0").regnum == 40 and X86_64.get("mxcsr").regnum == 56
    assert (X86_64.get("fs_base").regnum, X86_64.get("gs_base").regnum) == (57, 58)
    assert X86_64.g_offset("rip") == 128 and X86_64.g_offset("xmm0") == 276 and X86_64.g_size == 552
    assert X86_64.features == ("org.gnu.gdb.i386.core", SSE_FEATURE, SEGMENTS_FEATURE)


def test_layout_without_sse_or_segments_leaves_them_out() -> None:
    core = x86_64_layout(sse=False, segments=False)
    assert core.by_name("xmm0") is None and core.by_name("fs_base") is None
    assert x86_64_layout(sse=False).get("fs_base").regnum == 40


def test_our_description_parses_back_to_our_layout() -> None:
    assert parse_target_xml(build_target_xml(X86_64)) == X86_64


def test_includes_are_fetched_and_numbering_runs_on() -> None:
    top = b"""<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">
    <target><architecture>i386:x86-64</architecture>
    <xi:include href="a.xml"/><xi:include href="b.xml"/></target>"""
    parts = {
        "a.xml": b'<feature name="f.a"><reg name="x" bitsize="64"/><reg name="y" bitsize="32" regnum="5"/></feature>',
        "b.xml": b'<?xml version="1.0"?><feature name="f.b"><!-- <reg name="hidden" bitsize="8"/> --><reg name="z" bitsize="128" type="vec128"/></feature>',
    }
    fetched: list[str] = []

    def fetch(href: str) -> bytes:
        fetched.append(href)
        return parts[href]

    layout = parse_target_xml(top, fetch)
    assert fetched == ["a.xml", "b.xml"]
    assert layout.architecture == "i386:x86-64"
    assert [(r.name, r.regnum, r.feature) for r in layout.registers] == [("x", 0, "f.a"), ("y", 5, "f.a"), ("z", 6, "f.b")]
    assert layout.g_offset("z") == 12 and layout.g_size == 28


@pytest.mark.parametrize("document, message", [
    (b"<target><feature>", "not well-formed"),
    (b"", "not well-formed"),
    (b'<target><feature name="f"><reg bitsize="8"/></feature></target>', "without a name"),
    (b'<target><feature name="f"><reg name="a" bitsize="x"/></feature></target>', "not a decimal"),
    (b'<target><feature name="f"><reg name="a" bitsize="0"/></feature></target>', "bitsize 0"),
    (b'<target><feature name="f"><reg name="a" bitsize="8" regnum="99999999"/></feature></target>', "out of range"),
    (b'<target><feature name="f"><reg name="a" bitsize="8"/><reg name="a" bitsize="8"/></feature></target>', "twice"),
    (b'<target><feature name="f"><reg name="a" bitsize="8"/><reg name="b" bitsize="8" regnum="0"/></feature></target>', "share number"),
    (b"<target><architecture>i386</architecture></target>", "no registers"),
    (b'<target><xi:include href="x.xml"/></target>', "nothing can fetch"),
    (b'<!DOCTYPE t [<!ENTITY a "aaaa">]><target/>', "entity"),
])  # fmt: skip
def test_broken_descriptions_are_refused(document: bytes, message: str) -> None:
    with pytest.raises(RspError, match=message):
        parse_target_xml(document)


def test_an_include_cycle_ends_in_an_error() -> None:
    loop = b'<target><xi:include href="self.xml"/></target>'
    with pytest.raises(RspError, match="deeper than"):
        parse_target_xml(loop, lambda href: loop)


def test_a_builder_refuses_types_it_cannot_define() -> None:
    layout = RegisterLayout((Register("cr0", 64, 0, "x64_cr0", None, "f"),))
    with pytest.raises(RspError, match="x64_cr0"):
        build_target_xml(layout)
