"""The ``kvmbench`` command: probe, run, attach, linux, gdbserver, bench, lab."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any
from pathlib import Path

from kvmbench.errors import KvmbenchError


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_probe(args: argparse.Namespace) -> int:
    from kvmbench.backends.kvm.probe import probe_host

    caps = probe_host(refresh=args.refresh)
    if args.json:
        print(json.dumps({
            "host": caps.host,
            "results": [
                {"feature": r.feature.name, "label": r.feature.value, "works": r.works,
                 "detail": r.detail, "median_us": r.median_us}
                for r in caps.results.values()
            ],
        }, indent=1))
        return 0
    print(f"host: {caps.host}")
    _print_table(
        ("mechanism", "works", "median us", "observed"),
        [(r.feature.value, "yes" if r.works else "NO",
          f"{r.median_us:.1f}" if r.median_us is not None else "-", r.detail or "")
         for r in caps.results.values()],
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import kvmbench

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with kvmbench.open(args.guest, args.args, target=args.target, on_console=echo) as session:
        return _run_session(session, args)


def _run_session(session: Any, args: argparse.Namespace, seconds: float | None = None) -> int:
    """Arm --break/--trace/--watch, run until the guest exits, ``seconds``
    pass or Ctrl-C, print the hit table; return the guest's exit code."""
    from kvmbench.engine.model import StopReason

    requests = []
    for loc in args.breaks:
        requests.append(session.breakpoints.add(loc, kind=args.kind))
    for loc in args.traces:
        requests.append(session.breakpoints.trace(loc, kind=args.kind))
    for loc in args.watches:
        requests.append(session.watchpoints.add(loc))
    ended = threading.Event()  # time is up, or Ctrl-C: pause, then stop

    def end(*_: object) -> None:
        ended.set()
        session.pause()

    timer = threading.Timer(seconds, end) if seconds else None
    previous = signal.signal(signal.SIGINT, end)
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        while True:
            stop = session.cont()
            if stop.reason is StopReason.EXITED or ended.is_set():
                break
            if not stop.alive:
                print(f"kvmbench: {stop.describe()}", file=sys.stderr)
                return 128
            where = session.symbols.format_address(stop.pc) if stop.pc is not None else ""
            if stop.reason is StopReason.HALTED:
                # Continuing would halt again at once: nothing can wake it.
                print(f"kvmbench: {stop.describe()} ({where})", file=sys.stderr)
                return 125
            print(f"[kvmbench] {stop.describe()} ({where})", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous)
        if timer is not None:
            timer.cancel()
    if requests:
        _print_hits(session, requests)
    return stop.exit_code or 0


def cmd_attach(args: argparse.Namespace) -> int:
    import kvmbench

    with kvmbench.attach(args.address, symbols=args.symbols) as session:
        return _run_session(session, args, seconds=args.seconds)


def _print_hits(session: object, requests: list) -> None:
    from kvmbench.engine.model import Watchpoint

    rows = []
    for r in requests:
        rows.append((r.number, "watch" if isinstance(r, Watchpoint) else
                     ("trace" if r.tracepoint else "break"), r.location, r.served_by, r.hit_count))
    print(file=sys.stderr)
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        _print_table(("num", "type", "location", "mechanism", "hits"), rows)
        for r in requests:
            if isinstance(r, Watchpoint):
                _print_writes(session, r)
    finally:
        sys.stdout = stdout


def _print_writes(session, wp) -> None:  # type: ignore[no-untyped-def]
    from collections import Counter

    writers = Counter(session.hits.rows(wp.number).pc)
    print(f"\nwrites to {wp.location} (final value {int.from_bytes(wp.value, 'little')}):")
    _print_table(("writer", "pc", "writes"),
                 [(session.symbols.format_address(pc), f"{pc:#x}", n)
                  for pc, n in writers.most_common()])


def cmd_linux(args: argparse.Namespace) -> int:
    """Boot a kernel, arm --break/--trace, run CMD in its shell, print its
    output and the hit table; exit with CMD's exit code."""
    import time

    import kvmbench
    from kvmbench.errors import UsageError

    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not words:
        raise UsageError("usage: kvmbench linux [OPTIONS] -- CMD (a command for the guest's shell)")
    files = {}
    for spec in args.files:
        host, sep, guest = spec.rpartition(":")
        if not sep or not host or not guest.startswith("/"):
            raise UsageError(f"--file {spec!r}: use HOST:GUEST, GUEST an absolute path in the guest")
        files[guest] = host
    started = time.monotonic()
    with kvmbench.linux(args.kernel, args.initrd, args.append, args.accel, args.smp, args.memory,
                        files, modules=args.modules) as session:
        origin = "from its snapshot" if session.machine.from_snapshot else "cold"
        print(f"kvmbench: Linux {session.release} ({session.target.name}) ready {origin} in "
              f"{time.monotonic() - started:.2f} s", file=sys.stderr)
        requests = [session.breakpoints.add(loc, kind=args.kind) for loc in args.breaks]
        requests += [session.breakpoints.trace(loc, kind=args.kind) for loc in args.traces]
        command = " ".join(words)  # as ssh does: the guest's shell parses it
        interrupted = threading.Event()  # Ctrl-C: pause the guest, report, stop

        def interrupt(*_: object) -> None:
            interrupted.set()
            session.pause()

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            result = session.shell(command, timeout=args.timeout)
            while not result.finished and not interrupted.is_set():
                stop = result.stop
                assert stop is not None
                if not stop.alive:
                    break
                where = session.symbols.format_address(stop.pc) if stop.pc is not None else ""
                cpu = f" on CPU {stop.extra['cpu']}" if "cpu" in stop.extra else ""
                print(f"[kvmbench] {stop.describe()} ({where}){cpu}", file=sys.stderr)
                result = session.wait_command(timeout=args.timeout)
        finally:
            signal.signal(signal.SIGINT, previous)
        sys.stdout.write(result.output)
        sys.stdout.flush()
        if requests:
            _print_hits(session, requests)
        if not result.finished:
            print(f"kvmbench: {result.describe()}", file=sys.stderr)
            return 130 if interrupted.is_set() else 128
        if result.exit_code is None:
            print(f"kvmbench: {result.describe()}", file=sys.stderr)
            return 128 + (result.signal or 0)
        return result.exit_code


def cmd_gdbserver(args: argparse.Namespace) -> int:
    from kvmbench.gdbserver.cli import run_gdbserver

    return run_gdbserver(args.guest, args.args, args.listen, log_packets=args.log)


def cmd_bench(args: argparse.Namespace) -> int:
    from kvmbench.bench.runner import run_bench

    if args.linux:
        from kvmbench.bench.linux import main as run_linux_bench

        return run_linux_bench(repeat=args.repeat, as_json=args.json)
    if args.gdb:
        from kvmbench.bench.gdb import main as run_gdb_bench

        return run_gdb_bench(repeat=args.repeat, as_json=args.json)
    if args.target == "qemu":
        from kvmbench.bench.remote import main as run_remote_bench

        return run_remote_bench(repeat=args.repeat, as_json=args.json)
    status = run_bench(hits=args.hits, repeat=args.repeat, as_json=args.json, fib=args.fib)
    if args.panel:
        from kvmbench.bench.panel import run_panel_bench

        result = run_panel_bench()
        print(json.dumps(result.as_dict()) if args.json else result.describe())
    return status


def cmd_lab(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parent.parent
    notebooks = root / "notebooks"
    subprocess.run([sys.executable, "-m", "kvmbench.jupyter.install", "--sys-prefix"], check=True)
    argv = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebooks}",
            "--ServerApp.ip=127.0.0.1", *args.jupyter_args]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # /dev/kvm often needs root; Jupyter refuses it otherwise
    os.execv(sys.executable, argv)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvmbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("probe", help="find what this host's KVM really delivers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--refresh", action="store_true", help="probe again instead of using the cache")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("run", help="boot a guest, stream its console, exit with its code")
    p.add_argument("guest", help="a bundled guest's name or an ELF path")
    p.add_argument("args", nargs="*", help="the guest's arguments")
    p.add_argument("--break", dest="breaks", action="append", default=[], metavar="LOC",
                   help="report each hit of LOC and go on")
    p.add_argument("--trace", dest="traces", action="append", default=[], metavar="LOC",
                   help="count hits of LOC")
    p.add_argument("--watch", dest="watches", action="append", default=[], metavar="LOC",
                   help="report every write to LOC")
    p.add_argument("--kind", default="auto", choices=("auto", "hw", "sw"),
                   help="mechanism for --break/--trace")
    p.add_argument("--target", default="kvm", choices=("kvm", "qemu", "auto"),
                   help="kvmbench's own VMM (kvm), QEMU TCG through its gdbstub (qemu), or kvm where usable")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("attach", help="debug the guest behind any GDB stub (QEMU's -s, ...)")
    p.add_argument("address", help="HOST:PORT or unix:PATH of the stub")
    p.add_argument("--symbols", metavar="ELF", help="the guest's ELF, for symbols and source")
    p.add_argument("--break", dest="breaks", action="append", default=[], metavar="LOC",
                   help="report each hit of LOC and go on")
    p.add_argument("--trace", dest="traces", action="append", default=[], metavar="LOC",
                   help="count hits of LOC")
    p.add_argument("--watch", dest="watches", action="append", default=[], metavar="LOC",
                   help="report every write to LOC")
    p.add_argument("--kind", default="auto", choices=("auto", "hw", "sw"),
                   help="mechanism for --break/--trace")
    p.add_argument("--seconds", type=float, metavar="N",
                   help="stop after N seconds (else at the guest's exit or Ctrl-C)")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("linux", help="boot a Linux kernel, run a command in it, count kernel functions",
                       description="Boot a Linux kernel under QEMU (Debian's by default; from its "
                                   "snapshot after the first time), run CMD in its shell with the "
                                   "--break/--trace requests armed, print CMD's output and the hit "
                                   "table, and exit with CMD's exit code.")
    p.add_argument("--kernel", metavar="K", help="a bzImage or PVH vmlinux (default: Debian's current kernel)")
    p.add_argument("--initrd", metavar="I", help="your own initramfs archive, unpacked before kvmbench's")
    p.add_argument("--file", dest="files", action="append", default=[], metavar="HOST:GUEST",
                   help="put the host file HOST at GUEST in the initramfs")
    p.add_argument("--module", dest="modules", action="append", default=[], metavar="NAME",
                   help="put a module of Debian's kernel package in /lib/modules")
    p.add_argument("--append", default="", metavar="ARGS", help="more kernel command line")
    p.add_argument("--accel", default="auto", choices=("auto", "tcg", "kvm"),
                   help="auto: KVM on a VMX/SVM host, else TCG")
    p.add_argument("--smp", type=int, default=1, metavar="N", help="number of CPUs")
    p.add_argument("--memory", default="512M", metavar="SIZE", help="guest memory (default 512M)")
    p.add_argument("--break", dest="breaks", action="append", default=[], metavar="F",
                   help="report each hit of F and go on")
    p.add_argument("--trace", dest="traces", action="append", default=[], metavar="F",
                   help="count hits of F (the plugin counter on TCG: no stop per hit)")
    p.add_argument("--kind", default="auto", choices=("auto", "hw", "sw"),
                   help="mechanism for --break/--trace")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="kill CMD after S seconds of running (default 600)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="the command for the guest's shell")
    p.set_defaults(func=cmd_linux)

    p = sub.add_parser("gdbserver", help="serve a guest to gdb or lldb (GDB remote protocol)")
    p.add_argument("guest", help="a bundled guest's name or an ELF path")
    p.add_argument("args", nargs="*", help="the guest's arguments")
    p.add_argument("--listen", default="127.0.0.1:1234", metavar="[HOST:]PORT",
                   help="address to listen on (default 127.0.0.1:1234; port 0: any free port)")
    p.add_argument("--log", action="store_true", help="print every packet to stderr")
    p.set_defaults(func=cmd_gdbserver)

    p = sub.add_parser("bench", help="cost per hit of each mechanism against its C floor")
    p.add_argument("--hits", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--gdb", action="store_true",
                   help="instead: gdb's counted hits/s through kvmbench's GDB server vs QEMU TCG's gdbstub")
    p.add_argument("--linux", action="store_true",
                   help="instead: a Linux kernel session: boot times, counted kernel hits/s through the "
                        "plugin vs breakpoints vs gdb, and the guest's slowdown with 1000 functions traced")
    p.add_argument("--panel", action="store_true",
                   help="also measure what a live debugger panel costs a running guest")
    p.add_argument("--fib", type=int, default=20, metavar="N",
                   help="the in-guest probe row traces fib N (default 20)")
    p.add_argument("--target", default="kvm", choices=("kvm", "qemu"),
                   help="qemu: counted hits/s through kvmbench's GDB remote client vs gdb on QEMU TCG")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("lab", help="open JupyterLab on the notebooks with the kvmbench kernel")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; every failure ends in one line on stderr."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "lab":
        # JupyterLab's own options (--port 8899, --no-browser) go to it as given.
        args.jupyter_args = [*extra, *args.jupyter_args]
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        return args.func(args)
    except KvmbenchError as e:
        print(f"kvmbench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (kvmbench run ... | head): stop
        # quietly, and keep Python from failing to flush stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:
        print(f"kvmbench: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
