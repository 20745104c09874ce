"""The boot contract between the in-process VMM and the guests it runs.

The bundled guests' runtime (``kvmbench/guests/src/runtime.h``) mirrors these
numbers; change both together.

Guest-physical memory is identity mapped (virtual == physical) with 2 MiB
pages over the first GiB. The VMM owns the first megabyte; ELF images are
linked at ``IMAGE_BASE``.
"""

from __future__ import annotations

#: Default guest memory size. Boot cost is independent of it (anonymous mmap).
DEFAULT_MEM_SIZE = 32 << 20
#: Guest memory sizes the boot contract allows: room for an image above
#: IMAGE_BASE, and no more than the identity-mapped first GiB.
MIN_MEM_SIZE = 2 << 20
MAX_MEM_SIZE = 1 << 30

PML4_ADDR = 0x1000
PDPT_ADDR = 0x2000
PD_ADDR = 0x3000
GDT_ADDR = 0x4000
IDT_ADDR = 0x5000
#: 256 fault-reporting stubs, one per vector, ``FAULT_STUB_SIZE`` bytes each.
FAULT_STUBS_ADDR = 0x6000
FAULT_STUB_SIZE = 16
#: argc/argv area: argv pointers first, then the NUL-terminated strings.
BOOT_ARGS_ADDR = 0x8000
BOOT_ARGS_SIZE = 0x1000
#: Initial stack (grows down). The runtime switches to its own stack.
BOOT_STACK_TOP = 0x80000
IMAGE_BASE = 0x100000

#: In-guest probes' area (kvmbench/backends/kvm/trampolines.py): the last
#: 2 MiB page the identity map covers, outside guest RAM (probes are
#: offered only when RAM ends below it). Not guest memory: no memslot of
#: GuestMemory covers it, and the guest has no business there.
PROBE_AREA_ADDR = 0x3FE0_0000
PROBE_AREA_SIZE = 2 << 20

GDT_CODE64_SELECTOR = 0x08
GDT_DATA_SELECTOR = 0x10

# I/O ports.
#: COM1 transmit register: ``out`` of one byte prints one character.
PORT_SERIAL = 0x3F8
#: COM1 line status register: reads as "transmitter empty".
PORT_SERIAL_LSR = 0x3FD
#: ``out`` of a 32-bit value ends the guest with that exit code
#: (same port QEMU users give isa-debug-exit).
PORT_EXIT = 0xF4
#: ``out`` of a vector number from the VMM's default exception stubs: the
#: guest faulted with no handler of its own.
PORT_FAULT = 0xF5
#: ``out`` of a 32-bit period in microseconds starts the periodic timer
#: interrupt (vector ``TIMER_VECTOR``); 0 stops it.
PORT_TIMER = 0xF6
TIMER_VECTOR = 0x20
