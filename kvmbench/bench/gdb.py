"""``kvmbench bench --gdb``: gdb's counted breakpoint hits per second through
kvmbench's GDB server and through QEMU TCG's gdbstub, on the same guest.

gdb (Debian's, batch mode) sets ``break *bench_target`` with the commands
``silent`` and ``continue`` on the ``benchloop call N`` guest and runs it
to its exit: every hit is two stops and a handful of packets (the stop, a
thread list update, removing the breakpoint, a step over it, inserting it
again, continuing), the way a user's counting breakpoint costs. The same
gdb script runs against ``kvmbench gdbserver``'s server (in this process)
and against qemu-system-x86_64 under TCG booting the same ELF through its
PVH entry, alternately, ``repeat`` times.

Start-up (gdb reading symbols, booting, connecting) is taken out by
running each side at two hit counts: the rate is the difference in hits
over the difference in seconds. The goal (DESIGN.md, issue 13): at least
ten times QEMU's rate.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import kvmbench
from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, Qemu, QemuOptions
from kvmbench.errors import HostUnsupported, KvmbenchError
from kvmbench.gdbserver import GdbServer
from kvmbench.guests import QEMU_EXTRA_ARGS, guest_path, pvh_command_line

GUEST = "benchloop"
SYMBOL = "bench_target"
GDB_TIMEOUT = 600.0
#: The rate goal against QEMU's gdbstub.
GOAL = 10.0


@dataclass(frozen=True)
class GdbBenchResult:
    """Counted hits per second through each stub (median of ``repeat`` slopes)."""

    hits: tuple[int, int]
    repeat: int
    kvmbench_hits_per_s: float
    qemu_hits_per_s: float
    kvmbench_runs: tuple[float, ...]
    qemu_runs: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return self.kvmbench_hits_per_s / self.qemu_hits_per_s

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": round(self.ratio, 2), "goal": GOAL}

    def describe(self) -> str:
        low, high = self.hits
        verdict = "meets" if self.ratio >= GOAL else "misses"
        return "\n".join([
            f"gdb break+continue on {GUEST} ({SYMBOL}), {low} and {high} hits, "
            f"median of {self.repeat} alternating runs",
            f"  kvmbench gdbserver  {self.kvmbench_hits_per_s:8.0f} hits/s",
            f"  QEMU TCG gdbstub    {self.qemu_hits_per_s:8.0f} hits/s",
            f"  ratio {self.ratio:.1f}x ({verdict} the {GOAL:.0f}x goal)",
        ])


def _script(target: str, workdir: Path, ignore: int | None = None) -> Path:
    """gdb counting hits of ``*bench_target``: stopping silently and going
    on at each, or (``ignore``) letting gdb pass that many hits itself."""
    path = workdir / "count.gdb"
    counting = (["commands", "silent", "continue", "end"] if ignore is None
                else [f"ignore 1 {ignore}"])
    path.write_text("\n".join([
        "set pagination off", "set confirm off", f"target remote {target}",
        f"break *{SYMBOL}", *counting, "continue", "",
    ]))
    return path


def _run_gdb(target: str, image: Path, workdir: Path, ignore: int | None = None) -> tuple[float, str]:
    script = _script(target, workdir, ignore)
    start = time.perf_counter()
    done = subprocess.run(["gdb", "-batch", "-nx", "-x", str(script), str(image)],
                          capture_output=True, text=True, timeout=GDB_TIMEOUT, check=False)
    return time.perf_counter() - start, done.stdout + done.stderr


def time_kvmbench(hits: int, workdir: Path) -> float:
    """Seconds gdb takes to count ``hits`` hits through kvmbench's server."""
    with kvmbench.open(GUEST, ["call", str(hits)]) as session:
        server = GdbServer(session, "127.0.0.1", 0).start()
        try:
            host, port = server.address
            seconds, output = _run_gdb(f"{host}:{port}", session.image or guest_path(GUEST), workdir)
        finally:
            server.stop()
        if session.state.value != "exited":
            raise KvmbenchError(f"gdb did not run the guest to its exit through kvmbench: {output[-300:]}")
    return seconds


def time_qemu(hits: int, workdir: Path, ignore: bool = False) -> float:
    """Seconds gdb takes to count ``hits`` hits through QEMU's gdbstub
    (``ignore``: with ``ignore 1 hits`` rather than a command list)."""
    image = guest_path(GUEST)
    args = ["call", str(hits)]
    options = QemuOptions(kernel=image, append=pvh_command_line(image, args), memory="64M",
                          devices=(DEBUG_EXIT_DEVICE,), extra_args=QEMU_EXTRA_ARGS)
    qemu = Qemu.start(options)
    try:
        seconds, output = _run_gdb(qemu.gdb_address.removeprefix("unix:"), image, workdir,
                                   hits if ignore else None)
        code = qemu.wait_exit(30)
    finally:
        qemu.close()
    if code != 0:
        raise KvmbenchError(f"the guest did not exit cleanly under QEMU (code {code}): {output[-300:]}")
    return seconds


def run_gdb_bench(low: int = 200, high: int = 1200, repeat: int = 3) -> GdbBenchResult:
    """Alternate both sides at both hit counts ``repeat`` times."""
    if shutil.which("gdb") is None:
        raise HostUnsupported("gdb is needed for bench --gdb (Debian's gdb: make setup)")
    if not 0 < low < high:
        raise KvmbenchError(f"hit counts must be 0 < low < high, not {low}, {high}")
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="kvmbench-bench-gdb-") as tmp:
        workdir = Path(tmp)
        for _ in range(repeat):
            k_low, q_low = time_kvmbench(low, workdir), time_qemu(low, workdir)
            k_high, q_high = time_kvmbench(high, workdir), time_qemu(high, workdir)
            ours.append((high - low) / (k_high - k_low))
            theirs.append((high - low) / (q_high - q_low))
    return GdbBenchResult((low, high), repeat, round(statistics.median(ours), 1),
                          round(statistics.median(theirs), 1), tuple(round(r, 1) for r in ours),
                          tuple(round(r, 1) for r in theirs))


def main(repeat: int, as_json: bool) -> int:
    result = run_gdb_bench(repeat=repeat)
    print(json.dumps(result.as_dict()) if as_json else result.describe())
    return 0
