"""Shared fixtures: this host's probed capabilities, skips by probe reason,
and guest sessions that are always closed.

Tests never hard-code what the host can do: they ask ``caps`` and skip with
the probe's own reason (``caps.why_not(feature)``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kvmbench
from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.engine.session import Session

HAVE_KVM = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
NO_KVM_REASON = "no usable /dev/kvm on this machine"
HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None
NO_QEMU_REASON = "qemu-system-x86_64 is not installed (make debian installs it)"

#: Guest-level tests need these modules; pure tests (planner, patch table) do not.
_KVM_MODULES = ("test_engine_", "test_conformance")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_KVM:
        return
    skip = pytest.mark.skip(reason=NO_KVM_REASON)
    for item in items:
        if "kvm" in item.keywords or any(m in item.nodeid for m in _KVM_MODULES):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def caps() -> HostCapabilities:
    """What this host's KVM really delivers (probed once, cached per host)."""
    if not HAVE_KVM:
        pytest.skip(NO_KVM_REASON)
    from kvmbench.backends.kvm.probe import probe_host

    return probe_host()


@pytest.fixture(scope="session")
def skip_unless(caps: HostCapabilities) -> Callable[..., None]:
    """``skip_unless(Feature.X, ...)``: skip with the probe's reason unless all work."""

    def check(*features: Feature) -> None:
        for feature in features:
            if not caps.works(feature):
                pytest.skip(caps.why_not(feature))

    return check


@pytest.fixture
def open_guest(caps: HostCapabilities) -> Iterator[Callable[..., Session]]:
    """``open_guest("fib", [12])``: a session closed after the test
    (``target="qemu"`` for the same guest under QEMU)."""
    sessions: list[Session] = []

    def open_(guest: str, args: object = (), **kw: object) -> Session:
        if kw.get("target", "kvm") == "kvm":
            kw.setdefault("capabilities", caps)
        session = kvmbench.open(guest, [str(a) for a in args], **kw)  # type: ignore[arg-type]
        sessions.append(session)
        return session

    yield open_
    for session in sessions:
        if session.state.value == "running":
            continue
        session.close()


@pytest.fixture(params=["kvm", "qemu"])
def on_target(request: pytest.FixtureRequest) -> Iterator[Callable[..., Session]]:
    """``on_target("fib", [12])``: the guest on each target in turn (kvm:
    kvmbench's VMM; qemu: QEMU TCG through its gdbstub), skipped where the
    machine lacks one; closed after the test. ``.target`` names it."""
    name = request.param
    if name == "kvm" and not HAVE_KVM:
        pytest.skip(NO_KVM_REASON)
    if name == "qemu" and not HAVE_QEMU:
        pytest.skip(NO_QEMU_REASON)
    opener = request.getfixturevalue("open_guest") if name == "kvm" else None
    sessions: list[Session] = []

    def open_(guest: str, args: object = (), **kw: object) -> Session:
        if opener is not None:
            return opener(guest, args, **kw)
        session = kvmbench.open(guest, [str(a) for a in args], target="qemu", **kw)  # type: ignore[arg-type]
        sessions.append(session)
        return session

    open_.target = name  # type: ignore[attr-defined]
    yield open_
    for session in sessions:
        if session.state.value != "running":
            session.close()


def fib_value(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def fib_calls(n: int) -> int:
    """Calls fib(n) makes to fib, itself included: 2 * fib(n + 1) - 1."""
    return 2 * fib_value(n + 1) - 1


def console_counts(console: str, pattern: str) -> dict[str, int]:
    """``{name: N}`` from guest lines matching ``pattern`` (groups: name, N)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(pattern, console)}


def assemble(tmp_path: Path, body: str) -> Path:
    """A raw ELF from a few lines of x86-64 assembly, linked at the image base."""
    from kvmbench.backends.kvm import layout

    src = tmp_path / "guest.S"
    src.write_text(f".globl _start\n_start:\n{body}\n")
    elf = src.with_suffix(".elf")
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-no-pie", f"-Wl,-Ttext={layout.IMAGE_BASE:#x}",
         "-o", str(elf), str(src)],
        check=True,
    )
    return elf


@pytest.fixture
def stub_factory(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """``stub_factory(packet_m=lambda self, packet: ...)``: a scripted gdbstub
    (tests/gdbstub_scripted.py) with those methods overridden, closed after
    the test."""
    from gdbstub_scripted import ScriptedStub

    made: list[ScriptedStub] = []

    def make(**overrides: Callable[..., object]) -> ScriptedStub:
        cls = type("Stub", (ScriptedStub,), overrides)
        stub = cls(tmp_path / str(len(made)) if made else tmp_path)
        made.append(stub)
        return stub

    yield make
    for stub in made:
        stub.close()
