"""The shipped guest ELFs are current, reproducible and what the tests expect.

Compares against the reference tools where it can: the MANIFEST against
the sources' sha256, a fresh ``make`` against the committed bytes, and the
ELFs' headers and symbols (read with pyelftools) against what the other
tests rely on.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kvmbench.errors import UsageError
from kvmbench.guests import BIN_DIR, GUEST_NAMES, GUESTS_DIR, guest_path, iter_guests

MANIFEST = BIN_DIR / "MANIFEST"
IMAGE_BASE = 0x100000  # kvmbench/backends/kvm/layout.py
PAGE = 0x1000

#: Symbols other tests, the probe and the benchmarks look up, per guest.
REQUIRED_SYMBOLS: dict[str, tuple[str, ...]] = {
    "hello": (),
    "fib": ("fib",),
    "sort": ("items", "compare", "swap", "partition", "quicksort"),
    "counter": (
        "counter", "increment", "add_ten", "double_counter", "reset_counter",
        *(f"watch_{c}" for c in "abcdef"), *(f"bump_{c}" for c in "abcdef"),
        "read_me", "reader", "writer_of_read_me",
    ),
    "callmix": ("calls", *(f"f{i}" for i in range(10))),
    "selfmod": ("patched", "patch_site", "patch_count"),
    "int3guest": ("bp_count", "bp_handler", "do_int3", "int3_site"),
    "ticks": ("ticks", "work_done", "work", "tick_handler"),
    "spin": ("spins", "spin_forever"),
    "probe": (
        "probe_var", "probe_target", "probe_int3_site", "probe_hlt_site",
        "probe_step_code", "probe_ticks", "probe_sti_block", "probe_sti_block_end",
    ),
    "benchloop": ("bench_target", "bench_var"),
}
#: Runtime symbols every guest has.
RUNTIME_SYMBOLS = ("_start", "main", "trap_stubs", "trap_common", "trap_dispatch", "printf", "exit")
#: Variables that must have a page to themselves (or with their group only).
PAGE_PRIVATE = {
    "counter": (("counter",), tuple(f"watch_{c}" for c in "abcdef"), ("read_me",)),
    "probe": (("probe_var",),),
    "benchloop": (("bench_var",),),
}


def read_manifest() -> tuple[dict[str, str], dict[str, str]]:
    """(toolchain lines by tool, sha256 by source path) from bin/MANIFEST."""
    tools: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for line in MANIFEST.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith(("gcc: ", "ld: ")):
            tool, _, version = line.partition(": ")
            tools[tool] = version
        else:
            digest, _, path = line.partition("  ")
            hashes[path] = digest
    return tools, hashes


def current_sources() -> list[str]:
    return ["Makefile", *sorted(f"src/{p.name}" for p in (GUESTS_DIR / "src").iterdir())]


def symbols_of(elf: ELFFile) -> dict[str, tuple[int, int]]:
    """name -> (value, size) of every named symbol."""
    return {s.name: (s["st_value"], s["st_size"]) for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}


def test_manifest_matches_sources() -> None:
    _, recorded = read_manifest()
    sources = current_sources()
    assert sorted(recorded) == sorted(sources), "sources added or removed: run make -C kvmbench/guests"
    stale = [
        path for path in sources
        if hashlib.sha256((GUESTS_DIR / path).read_bytes()).hexdigest() != recorded[path]
    ]
    assert not stale, f"edited without rebuilding: {stale}; run make -C kvmbench/guests"


def test_every_guest_is_shipped() -> None:
    assert sorted(p.stem for p in BIN_DIR.glob("*.elf")) == sorted(GUEST_NAMES)
    makefile = (GUESTS_DIR / "Makefile").read_text()
    guests_line = next(line for line in makefile.splitlines() if line.startswith("GUESTS :="))
    assert tuple(guests_line.split(":=")[1].split()) == GUEST_NAMES


def _tool_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.splitlines()[0] if out else None


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    tools, _ = read_manifest()
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make or gcc not installed: cannot rebuild the guests")
    gcc = _tool_version(["gcc", "--version"])
    if gcc != tools["gcc"]:
        pytest.skip(f"gcc is {gcc!r}, the guests were built with {tools['gcc']!r}")
    ld_path = subprocess.run(["gcc", "-print-prog-name=ld"], capture_output=True, text=True).stdout.strip()
    ld = _tool_version([ld_path or "ld", "--version"])
    if ld != tools["ld"]:
        pytest.skip(f"ld is {ld!r}, the guests were built with {tools['ld']!r}")
    subprocess.run(
        ["make", "-s", "-C", str(GUESTS_DIR), f"BINDIR={tmp_path}"],
        check=True, capture_output=True, timeout=300,
    )
    differ = [
        name for name in (*(f"{g}.elf" for g in GUEST_NAMES), "MANIFEST")
        if (tmp_path / name).read_bytes() != (BIN_DIR / name).read_bytes()
    ]
    assert not differ, f"rebuilt files differ from the committed ones: {differ}"


@pytest.mark.parametrize("name", GUEST_NAMES)
def test_elf_shape_and_symbols(name: str) -> None:
    with guest_path(name).open("rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and elf.little_endian
        assert elf["e_machine"] == "EM_X86_64"
        assert elf["e_type"] == "ET_EXEC"
        loads = list(elf.iter_segments("PT_LOAD"))
        assert len(loads) == 1
        load = loads[0]
        assert load["p_vaddr"] == load["p_paddr"] == IMAGE_BASE
        assert load["p_vaddr"] <= elf["e_entry"] < load["p_vaddr"] + load["p_filesz"]
        assert load["p_memsz"] < 16 << 20, "the image must leave most of 32 MiB guest memory free"
        symbols = symbols_of(elf)
        assert symbols["_start"][0] == elf["e_entry"]
        missing = [s for s in (*RUNTIME_SYMBOLS, *REQUIRED_SYMBOLS[name]) if s not in symbols]
        assert not missing, f"{name}.elf lacks {missing}"
        for group in PAGE_PRIVATE.get(name, ()):
            pages = {symbols[s][0] // PAGE for s in group}
            assert len(pages) == 1, f"{group} span pages {sorted(pages)}"
            page = pages.pop()
            others = [
                s for s, (value, size) in symbols.items()
                if s not in group and size > 0 and value // PAGE <= page <= (value + size - 1) // PAGE
            ]
            assert not others, f"{others} share the page of {group}"


def test_fib_recurses_twice() -> None:
    """At -O0 fib stays textbook: two calls to itself (21891 calls for fib(20))."""
    with guest_path("fib").open("rb") as f:
        elf = ELFFile(f)
        start, size = symbols_of(elf)["fib"]
        text = elf.get_section_by_name(".text")
        code = text.data()[start - text["sh_addr"]: start - text["sh_addr"] + size]
    calls = [
        i for i in range(len(code) - 4)
        if code[i] == 0xE8 and start + i + 5 + int.from_bytes(code[i + 1:i + 5], "little", signed=True) == start
    ]
    assert len(calls) == 2


def test_selfmod_patch_site_is_mov_eax_1() -> None:
    with guest_path("selfmod").open("rb") as f:
        elf = ELFFile(f)
        site = symbols_of(elf)["patch_site"][0]
        text = elf.get_section_by_name(".text")
        offset = site - text["sh_addr"]
        assert text.data()[offset:offset + 5] == bytes([0xB8, 1, 0, 0, 0])


def test_no_absolute_paths() -> None:
    for name, path in iter_guests():
        data = path.read_bytes()
        assert str(GUESTS_DIR).encode() not in data, f"{name}.elf names the build directory"
        assert b"/home/" not in data and b"/work/" not in data and b"/tmp/" not in data


def test_guest_path_rejects_unknown_names() -> None:
    with pytest.raises(UsageError, match="unknown guest 'nope'.*fib"):
        guest_path("nope")
    assert dict(iter_guests())["fib"] == guest_path("fib")
