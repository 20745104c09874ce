"""The correctness corpus of issue 9: building its guests, reading their
ground truth, and running one of their cases under requests.

The guests (``tests/guests/src``, see each source's header) count, themselves,
how often each interesting instruction executes and how often each watched
variable is stored to, changed and read, and print that at exit as
``name value`` lines. Every corpus test compares kvmbench's answer with those
lines: :func:`parse_counts` is their one parser.

The guests are built once per test run into ``tests/guests/build``
(git-ignored); a stamp of every input's hash skips the build when nothing
changed, so the corpus costs seconds, not minutes.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import kvmbench
from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.engine.model import Access, Mechanism, Stop, StopReason
from kvmbench.engine.session import Session

TESTS_DIR = Path(__file__).resolve().parent
GUESTS_DIR = TESTS_DIR / "guests"
BUILD_DIR = GUESTS_DIR / "build"
RUNTIME_DIR = TESTS_DIR.parent / "kvmbench" / "guests" / "src"
#: The bundled runtime files the corpus links with (never edited here).
RUNTIME_FILES = ("crt0.S", "runtime.c", "runtime.h", "link.ld", "pvh.c", "pvh_entry.S")

#: Assembly guests (one case table each) and C guests built at -O2 and -Os.
ASM_GUESTS = ("strings", "bitops", "atomics", "stack", "pages", "smc", "sse", "halt")
C_GUESTS = tuple(f"{g}-{level}" for g in ("entries", "checksum") for level in ("O2", "Os"))
GUESTS = ASM_GUESTS + C_GUESTS

PAGE = 0x1000
#: A guest run that takes longer than this is stuck (the corpus runs in
#: well under a second per case even single-stepped on a slow host).
RUN_TIMEOUT = 10.0

_COUNT_LINE = re.compile(r"^([a-z_][a-z0-9_]*) (0x[0-9a-f]+|[0-9]+)$", re.MULTILINE)


# --- building ---------------------------------------------------------------------


def _inputs() -> list[Path]:
    return sorted((GUESTS_DIR / "src").iterdir()) + [GUESTS_DIR / "Makefile"] + [
        RUNTIME_DIR / name for name in RUNTIME_FILES
    ]


def build_stamp() -> str:
    """sha256 of every build input (corpus sources, Makefile, the bundled
    runtime) and of the compiler's version."""
    digest = hashlib.sha256()
    for path in _inputs():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
    digest.update(gcc.stdout.splitlines()[0].encode())
    return digest.hexdigest()


def _is_current(stamp: str) -> bool:
    stamp_file = BUILD_DIR / ".stamp"
    return (stamp_file.exists() and stamp_file.read_text() == stamp
            and all((BUILD_DIR / f"{g}.elf").exists() for g in GUESTS))


@functools.cache
def build_corpus() -> Path:
    """Build every corpus guest into BUILD_DIR (once per process, and not
    at all when the stamp says the ELFs are current); returns BUILD_DIR."""
    BUILD_DIR.mkdir(exist_ok=True)
    with (BUILD_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build once
        stamp = build_stamp()
        if not _is_current(stamp):
            done = subprocess.run(
                ["make", "-s", "-j2", "-C", str(GUESTS_DIR), f"BINDIR={BUILD_DIR}"],
                capture_output=True, text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"building the corpus failed:\n{done.stdout}{done.stderr}")
            (BUILD_DIR / ".stamp").write_text(stamp)
    return BUILD_DIR


def guest_path(name: str) -> Path:
    """The built ELF of corpus guest ``name`` ("strings", "entries-O2"...)."""
    return build_corpus() / f"{name}.elf"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The corpus build directory, built if needed."""
    return build_corpus()


# --- ground truth -------------------------------------------------------------------


def parse_counts(console: str) -> dict[str, int]:
    """The guest's ``name value`` lines (decimal or 0x hex) as a dict."""
    return {m.group(1): int(m.group(2), 0) for m in _COUNT_LINE.finditer(console)}


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    address: int
    size: int
    kind: str  # STT_FUNC, STT_OBJECT, STT_NOTYPE


@functools.cache
def elf_symbols(name: str) -> dict[str, ElfSymbol]:
    """Global symbols of a corpus guest, read with pyelftools (the reference,
    independent of kvmbench's symbol table)."""
    with guest_path(name).open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {
            s.name: ElfSymbol(s.name, s["st_value"], s["st_size"], s["st_info"]["type"])
            for s in table.iter_symbols()
            if s.name and s["st_info"]["bind"] == "STB_GLOBAL"
        }


def sites(name: str) -> dict[str, int]:
    """``site_X`` labels of a guest that have a ``count_X`` counter: X -> address."""
    symbols = elf_symbols(name)
    return {n[len("site_"):]: s.address for n, s in symbols.items()
            if n.startswith("site_") and f"count_{n[len('site_'):]}" in symbols}


def watched_objects(name: str) -> list[str]:
    """Variables the guest counts stores and reads of (its WATCHED macro)."""
    symbols = elf_symbols(name)
    return sorted(n[len("stores_"):] for n in symbols
                  if n.startswith("stores_") and f"reads_{n[len('stores_'):]}" in symbols)


@functools.cache
def code_bytes(name: str, address: int, length: int) -> bytes:
    """``length`` bytes of the ELF's loaded image at ``address``."""
    with guest_path(name).open("rb") as f:
        for segment in ELFFile(f).iter_segments("PT_LOAD"):
            start = segment["p_vaddr"]
            if start <= address and address + length <= start + segment["p_filesz"]:
                return segment.data()[address - start:address - start + length]
    raise ValueError(f"{address:#x}+{length} is not in {name}'s file image")


# --- mechanisms ---------------------------------------------------------------------------

#: Every mechanism that can serve a code breakpoint.
BREAK_MECHANISMS = [
    pytest.param(Mechanism.INT3, id="int3"),
    pytest.param(Mechanism.HLT_TRAP, id="hlt-trap"),
    pytest.param(Mechanism.HW_EXECUTE, id="hw-execute"),
]
#: Every mechanism that can serve a write watch.
WRITE_MECHANISMS = [
    pytest.param(Mechanism.PAGE_TRAP, id="page-trap"),
    pytest.param(Mechanism.HW_DATA, id="hw-data"),
    pytest.param(Mechanism.STEP_COMPARE, id="step-compare"),
]
#: Every mechanism that can serve a read or access watch.
READ_MECHANISMS = [
    pytest.param(Mechanism.HW_DATA, id="hw-data"),
    pytest.param(Mechanism.STEP_COMPARE, id="step-compare"),
]
#: How many requests one mechanism can serve at once (x86: four debug registers).
HW_SLOTS = 4


def feature_of(mechanism: Mechanism, access: Access = Access.WRITE) -> Feature:
    """What the host must deliver for ``mechanism`` (the probe's feature)."""
    if mechanism is Mechanism.HW_DATA:
        return Feature.HW_WRITE_WATCH if access is Access.WRITE else Feature.HW_ACCESS_WATCH
    return {
        Mechanism.INT3: Feature.INT3,
        Mechanism.HLT_TRAP: Feature.HLT_TRAP,
        Mechanism.HW_EXECUTE: Feature.HW_EXECUTE,
        Mechanism.PAGE_TRAP: Feature.READONLY_MEMSLOT,
        Mechanism.STEP_COMPARE: Feature.SINGLE_STEP,
    }[mechanism]


def require(caps: HostCapabilities, mechanism: Mechanism, access: Access = Access.WRITE) -> None:
    """Skip, with the probe's reason, unless this host offers ``mechanism``."""
    feature = feature_of(mechanism, access)
    if not caps.works(feature):
        pytest.skip(caps.why_not(feature))


def software_trap(caps: HostCapabilities) -> Mechanism:
    """The software trap this host offers (int3 where it works, else hlt)."""
    return Mechanism.INT3 if caps.works(Feature.INT3) else Mechanism.HLT_TRAP


def chunks(items: list[str], mechanism: Mechanism) -> Iterator[list[str]]:
    """``items`` in groups one run can arm: four at a time for a hardware
    slot, all at once for the other mechanisms."""
    size = HW_SLOTS if mechanism in (Mechanism.HW_EXECUTE, Mechanism.HW_DATA) else len(items)
    for i in range(0, len(items), max(size, 1)):
        yield items[i:i + size]


# --- running --------------------------------------------------------------------------------


def cont(s: Session, timeout: float = RUN_TIMEOUT) -> Stop:
    """``s.cont()``, failing the test if the guest has not stopped within
    ``timeout`` seconds (a watchdog pauses it: a hang is a failure, not a
    stuck test run)."""
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        s.pause()

    timer = threading.Timer(timeout, watchdog)
    timer.start()
    try:
        stop = s.cont()
    finally:
        timer.cancel()
    if fired.is_set() and stop.reason is StopReason.PAUSED:
        pytest.fail(f"the guest did not stop within {timeout:.0f} s "
                    f"(paused at {s.symbols.format_address(stop.pc or 0)})")
    return stop


def open_case(open_guest: Callable[..., Session], guest: str, case: str,
              n: int | None = None) -> Session:
    """A session of ``guest`` running ``case``, stopped at corpus_case_begin:
    the runtime's start-up has run undisturbed; arm requests now."""
    args = [case] if n is None else [case, n]
    s = open_guest(str(guest_path(guest)), args)
    begin = s.breakpoints.add("corpus_case_begin", temporary=True)
    stop = cont(s)
    assert stop.reason is StopReason.BREAKPOINT and stop.pc == begin.address, stop.describe()
    return s


def run_case(s: Session, on_stop: Callable[[Stop], None] | None = None) -> list[Stop]:
    """Continue until the case ends (corpus_case_end), passing every stop on
    the way to ``on_stop``; returns those stops."""
    end = s.breakpoints.add("corpus_case_end")
    in_case = s.symbols.get_by_name("corpus_in_case").address
    stops: list[Stop] = []
    while True:
        stop = cont(s)
        if stop.reason is StopReason.BREAKPOINT and stop.breakpoint == end.number:
            s.breakpoints.delete(end.number)
            return stops
        if stop.reason is StopReason.EXITED:
            pytest.fail(f"the guest ran to its exit past corpus_case_end: the breakpoint there "
                        f"({end.served_by}) never stopped it ({len(stops)} stops before)")
        assert stop.alive, f"the guest died under the requests: {stop.describe()}"
        assert stop.reason in (StopReason.BREAKPOINT, StopReason.WATCHPOINT), stop.describe()
        if not s.mem.read_u64(in_case):
            pytest.fail(f"a stop after the case ended, so the breakpoint at corpus_case_end "
                        f"({end.served_by}) was missed: {stop.describe()}")
        stops.append(stop)
        if on_stop is not None:
            on_stop(stop)


def finish_run(s: Session) -> dict[str, int]:
    """Delete every request, run the guest to its exit, return its ground truth."""
    for bp in list(s.breakpoints):
        s.breakpoints.delete(bp.number)
    for wp in list(s.watchpoints):
        s.watchpoints.delete(wp.number)
    stop = cont(s)
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    return parse_counts(s.console)


@functools.cache
def undisturbed_run(guest: str, *args: str | int) -> tuple[Stop, str]:
    """(final stop, console) of a run with no requests at all."""
    with kvmbench.open(guest_path(guest), [str(a) for a in args]) as s:
        stop = cont(s)
        return stop, s.console


def undisturbed(guest: str, *args: str | int) -> str:
    """The console of a run with no requests at all: the reference."""
    stop, console = undisturbed_run(guest, *args)
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    return console


def require_native(guest: str, case: str) -> None:
    """Skip unless ``case`` runs to its end undisturbed on this host (xsave
    does not: this host's KVM emulates guest code and fails on it)."""
    stop, _ = undisturbed_run(guest, case)
    if stop.reason is not StopReason.EXITED:
        pytest.skip(f"case {case} of {guest} does not run on this host even without "
                    f"requests: {stop.describe()}")


def one_line(error: BaseException) -> bool:
    """A user-facing error: one non-empty line."""
    text = str(error)
    return bool(text.strip()) and "\n" not in text.strip()


def close_leaves_code(s: Session, code_start: int, code_length: int) -> bytes:
    """Close ``s`` with whatever it has armed; the guest's code as it was in
    memory when the target itself closed (every byte put back by then)."""
    seen: list[bytes] = []
    physical = s.target.translate(code_start)
    close = s.target.close

    def look_then_close() -> None:
        seen.append(s.target.read_physical(physical, code_length))
        close()

    s.target.close = look_then_close  # type: ignore[method-assign]
    s.close()
    assert len(seen) == 1
    return seen[0]


def delete_every_request(s: Session, code_start: int, code_length: int) -> bytes:
    """Delete every breakpoint and watchpoint; the code's raw bytes after."""
    for bp in list(s.breakpoints):
        s.breakpoints.delete(bp.number)
    for wp in list(s.watchpoints):
        s.watchpoints.delete(wp.number)
    return s.target.read_physical(s.target.translate(code_start), code_length)
