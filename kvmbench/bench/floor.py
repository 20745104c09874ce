"""The floor of each debug mechanism: ``floor.c``, built and run.

``floor.c`` boots a bundled guest the way the Python VMM does and counts
one mechanism's hits with the least KVM work a hit needs (DESIGN.md,
"Measuring against the floor"). It is compiled on the host that measures,
so it needs gcc and the kernel's uapi headers (``linux/kvm.h``); the
program's header comment documents its arguments, output and exit status.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kvmbench.errors import HostUnsupported, KvmbenchError, MechanismUnavailable, UsageError
from kvmbench.guests import guest_path

#: The source shipped in the package (package-data ``kvmbench/bench/*.c``).
FLOOR_SOURCE = Path(__file__).resolve().with_name("floor.c")
#: What the floor program measures; the names are its first argument.
MECHANISMS: tuple[str, ...] = (
    "hw-exec", "hw-watch", "hlt-trap", "page-trap", "single-step", "none",
)
#: The guest whose loop makes one hit an iteration (``src/benchloop.c``).
BENCH_GUEST = "benchloop"

# floor.c's exit statuses.
_FAIL_MECHANISM, _FAIL_USAGE, _FAIL_HOST = 1, 2, 3


@dataclass(frozen=True, slots=True)
class FloorResult:
    """One run of the floor program.

    ``seconds`` runs from the first KVM_RUN to the guest's exit, so it
    includes the guest's start-up before the first hit
    (``first_hit_seconds``, None for ``none``, which counts no hits and
    reports N). ``per_hit_us`` is ``seconds / hits``. ``resume`` says how
    ``hw-exec`` resumed from a hit: ``"rf"`` (RF set, one KVM_RUN) or
    ``"step"`` on hosts that ignore RF (slot off, single-step, slot on).
    """

    mechanism: str
    hits: int
    seconds: float
    per_hit_us: float
    first_hit_seconds: float | None = None
    resume: str | None = None


def build_floor(workdir: Path) -> Path:
    """Compile ``floor.c`` into ``workdir``; return the program's path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise HostUnsupported("gcc is needed to build the benchmark floor")
    workdir.mkdir(parents=True, exist_ok=True)
    binary = workdir / "floor"
    command = [gcc, "-std=c11", "-O2", "-Wall", "-Werror", "-o", str(binary), str(FLOOR_SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # The usual cause is a host without linux/kvm.h (linux-libc-dev).
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        detail = errors[0].strip() if errors else _first_line(done.stderr, "gcc failed")
        raise HostUnsupported(f"the benchmark floor does not compile: {detail}")
    return binary


def run_floor(
    binary: Path,
    mechanism: str,
    n: int,
    symbol_address: int,
    *,
    image: Path | None = None,
    mode: str | None = None,
    timeout: float = 300.0,
) -> FloorResult:
    """Run the floor of ``mechanism`` for ``n`` hits on ``image`` (benchloop).

    ``symbol_address`` is bench_target's address for hw-exec and hlt-trap,
    bench_var's for hw-watch and page-trap, ignored otherwise. ``mode``
    overrides the guest's mode (default: ``write`` for hw-watch and
    page-trap, ``call`` otherwise).
    """
    if mechanism not in MECHANISMS:
        raise UsageError(f"unknown floor mechanism {mechanism!r}; one of {', '.join(MECHANISMS)}")
    if n < 1:
        raise UsageError(f"the floor needs at least one hit, not {n}")
    image = guest_path(BENCH_GUEST) if image is None else image
    command = [str(binary), mechanism, str(image), str(n), f"{symbol_address:x}"]
    if mode is not None:
        command.append(mode)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MechanismUnavailable(
            f"floor {mechanism}: no result within {timeout:g} s (a trap that never fires?)"
        ) from None
    if done.returncode != 0:
        raise _floor_error(done.returncode, _first_line(done.stderr, f"floor {mechanism} failed"))
    try:
        record = json.loads(done.stdout)
        return FloorResult(
            mechanism=record["mechanism"],
            hits=int(record["hits"]),
            seconds=float(record["seconds"]),
            per_hit_us=float(record["per_hit_us"]),
            first_hit_seconds=record.get("first_hit_seconds"),
            resume=record.get("resume"),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise KvmbenchError(f"floor {mechanism}: unreadable output {done.stdout!r} ({e})") from None


def _floor_error(status: int, line: str) -> KvmbenchError:
    if status == _FAIL_HOST:
        return HostUnsupported(line)
    if status == _FAIL_USAGE:
        return UsageError(line)
    if status == _FAIL_MECHANISM:
        return MechanismUnavailable(line)
    return KvmbenchError(f"{line} (exit status {status})")


def _first_line(text: str, default: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else default
