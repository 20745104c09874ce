"""The one exception hierarchy of kvmbench.

Every error a user can provoke derives from :class:`KvmbenchError` and its
``str()`` is one line that says what went wrong; front ends (CLI, kernel,
widgets) print that line instead of a traceback.
"""

from __future__ import annotations

import errno as _errno
import os


class KvmbenchError(Exception):
    """Base of every kvmbench error."""


class UsageError(KvmbenchError):
    """Bad input from the user: a malformed command, argument or value."""


class KvmError(KvmbenchError, OSError):
    """A KVM ioctl failed; carries the errno and the ioctl's name."""

    def __init__(self, err: int, ioctl: str) -> None:
        OSError.__init__(self, err, f"{ioctl}: {os.strerror(err)}")
        self.ioctl = ioctl

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno or 0, str(self.errno))
        return f"{self.ioctl} failed: {os.strerror(self.errno or 0)} ({name})"


class HostUnsupported(KvmbenchError):
    """The host's KVM lacks something kvmbench needs (or /dev/kvm is absent)."""


class GuestError(KvmbenchError):
    """The guest stopped running in a way that is not a normal exit."""

    def __init__(self, message: str, rip: int | None = None) -> None:
        super().__init__(message if rip is None else f"{message} at rip={rip:#x}")
        self.rip = rip


class GuestCrashed(GuestError):
    """The guest took an exception it had no handler for."""

    def __init__(self, vector: int, rip: int | None, error_code: int | None = None) -> None:
        detail = f"guest crashed: exception {vector}"
        if error_code is not None:
            detail += f" (error code {error_code:#x})"
        super().__init__(detail, rip)
        self.vector = vector
        self.error_code = error_code


class GuestShutdown(GuestError):
    """KVM_EXIT_SHUTDOWN: the guest triple-faulted."""


class KvmInternalError(GuestError):
    """KVM_EXIT_INTERNAL_ERROR or KVM_EXIT_FAIL_ENTRY: KVM could not go on."""

    def __init__(self, message: str, rip: int | None, suberror: int | None = None) -> None:
        super().__init__(message, rip)
        self.suberror = suberror


class UnexpectedExit(GuestError):
    """A KVM exit the VMM does not handle (unknown port, MMIO outside memory...)."""


class GuestMemoryError(KvmbenchError):
    """An address outside guest memory, or a virtual address that is not mapped."""


class SymbolError(KvmbenchError):
    """A symbol, file or line that the guest's symbols do not have."""


class BreakpointError(KvmbenchError):
    """A breakpoint or watchpoint request that cannot be served."""


class SlotsExhausted(BreakpointError):
    """Every hardware debug slot is taken; the message names their holders."""


class MechanismUnavailable(BreakpointError):
    """The host does not deliver the requested mechanism (says why)."""


class ProbeRefused(BreakpointError):
    """An in-guest probe cannot serve a request here; the message says why
    (the planner then serves it with an exit mechanism)."""


class ConditionError(BreakpointError):
    """A breakpoint condition that does not compile or raised when evaluated."""


class FrameUnknown(KvmbenchError):
    """A frame's caller cannot be found without guessing from frame data."""


class SessionStateError(KvmbenchError):
    """The command needs another session state (no guest, running, exited)."""


class QemuError(KvmbenchError):
    """QEMU is missing, failed to start, exited, or refused a QMP command."""


class RspError(KvmbenchError):
    """A GDB remote protocol packet that is malformed or cannot be encoded
    (the one error type of :mod:`kvmbench.rsp`)."""


class RemoteError(KvmbenchError):
    """A GDB remote stub failed us: the message names the stub's address."""


class RemoteConnectionError(RemoteError):
    """The stub could not be reached, or dropped the connection."""


class RemoteTimeout(RemoteError):
    """The stub did not answer within the time allowed."""


class RemoteProtocolError(RemoteError):
    """The stub broke the protocol: malformed packets, bad checksums."""


class RemoteRefused(RemoteError):
    """The stub answered a packet with an error (``E NN``) or as unsupported."""


class RegisterUnavailable(KvmbenchError):
    """A register a frame cannot supply: there are no registers (no live
    target), or a caller's register its callee did not save (gdb's
    ``<not saved>``)."""


class ExpressionError(UsageError):
    """An expression that does not parse or cannot be evaluated; the message
    is worded as gdb words it (``No symbol "foo" in current context.``)."""


class OptimizedOut(KvmbenchError):
    """A variable whose value the compiler did not keep at this pc (gdb's
    ``<optimized out>``)."""

    def __init__(self, message: str = "value has been optimized out") -> None:
        super().__init__(message)
