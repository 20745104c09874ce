"""Kicking a vCPU thread out of KVM_RUN with a signal.

KVM_RUN returns -EINTR (exit KVM_EXIT_INTR) when a signal with a handler
arrives for the thread inside it; ``immediate_exit`` covers the window before
the thread enters KVM_RUN (api.rst, "immediate_exit"). The handler does
nothing: only the interruption matters. Python installs handlers from the
main thread only, so the first machine created there installs it.
"""

from __future__ import annotations

import signal
import threading

from kvmbench.errors import HostUnsupported

#: A real-time signal nobody else in a Jupyter kernel uses.
KICK_SIGNAL = signal.SIGRTMIN + 3


def _ignore(signum: int, frame: object) -> None:
    """The kick only needs to interrupt KVM_RUN."""


def install_kick_handler() -> None:
    """Make sure KICK_SIGNAL has a (no-op) handler so it interrupts, not kills."""
    if signal.getsignal(KICK_SIGNAL) is _ignore:
        return
    if threading.current_thread() is not threading.main_thread():
        raise HostUnsupported(
            "the first kvmbench machine must be created on the main thread "
            "(it installs the signal handler that pauses vCPUs)"
        )
    signal.signal(KICK_SIGNAL, _ignore)


def kick(thread_id: int) -> None:
    """Interrupt KVM_RUN on the thread ``thread_id`` (a threading ident)."""
    try:
        signal.pthread_kill(thread_id, KICK_SIGNAL)
    except ProcessLookupError:
        pass  # the thread already left
