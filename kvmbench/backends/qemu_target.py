"""A bundled guest (or any PVH-bootable ELF) under QEMU, as a Target.

QEMU boots the image through its PVH entry (the guests' runtime has one),
with the same console and exit port (isa-debug-exit) as kvmbench's VMM;
the engine drives it through QEMU's gdbstub
(:class:`~kvmbench.backends.gdbremote.target.GdbRemoteTarget`), and the
session starts where kvmbench's VMM starts it: at the ELF's entry, the
firmware and the 32-to-64-bit switch already run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kvmbench.backends.gdbremote.client import GdbRemoteClient
from kvmbench.backends.gdbremote.target import GdbRemoteTarget
from kvmbench.backends.kvm import layout
from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, Qemu, QemuOptions
from kvmbench.errors import UsageError
from kvmbench.guests import QEMU_EXTRA_ARGS, pvh_command_line
from kvmbench.symbols.elf import ElfImage


def open_qemu_guest(
    image: Path,
    args: Sequence[str] = (),
    *,
    accel: str = "tcg",
    mem_size: int = layout.DEFAULT_MEM_SIZE,
    on_console: Callable[[str], None] | None = None,
) -> GdbRemoteTarget:
    """Start ``image`` under qemu-system-x86_64 and stop it at its entry point."""
    if mem_size % (1 << 20) or not layout.MIN_MEM_SIZE <= mem_size <= layout.MAX_MEM_SIZE:
        raise UsageError(f"guest memory size {mem_size:#x} is not whole MiB between "
                         f"{layout.MIN_MEM_SIZE >> 20} and {layout.MAX_MEM_SIZE >> 20} MiB")
    entry = ElfImage.from_path(image).entry
    options = QemuOptions(
        kernel=image,
        append=pvh_command_line(image, [str(a) for a in args]),
        accel=accel,
        memory=f"{mem_size >> 20}M",
        devices=(DEBUG_EXIT_DEVICE,),
        extra_args=QEMU_EXTRA_ARGS,
    )
    qemu = Qemu.start(options, on_console=on_console, qmp_events=False)
    try:
        client = GdbRemoteClient.connect(qemu.gdb_address)
        target = GdbRemoteTarget(client, name=f"qemu ({accel})", console=lambda: qemu.console,
                                 exit_code=qemu.wait_exit, on_close=qemu.close)
    except BaseException:
        qemu.close()
        raise
    try:
        target.run_to(entry)
    except BaseException:
        target.close()
        raise
    return target
