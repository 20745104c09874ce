"""A GDB remote protocol client for any gdbstub (QEMU's first): the
protocol level under kvmbench's remote target, with no engine concepts.

The handshake (GDB manual, "Remote Protocol"): ``qSupported`` with our
features; ``QStartNoAckMode`` where the stub offers it (QEMU 7.2 does not,
but never waits for our acks); ``target.xml`` and its includes read
through ``qXfer:features:read`` (QEMU answers ``p`` only once it has been
read); ``vCont?``; ``?`` for where the target stands. Then registers by
name (``p``/``P``, ``g``/``G``), memory (``m``, and ``X`` or ``M``),
``Z``/``z`` whose acceptance is the answer (a stub's limits are found by
trying), vCPUs as threads, resuming through ``vCont`` (or ``Hc`` with
``c``/``s``), and an interrupt from any thread.

Every failure is a one-line :class:`~kvmbench.errors.RemoteError` naming
the stub's address: refused packets, malformed replies, bad checksums, a
dropped connection, a stub that stops answering.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from kvmbench.backends.gdbremote.events import (
    StopEvent,
    TargetDisconnected,
    TargetExit,
    TargetKilled,
    TargetStop,
)
from kvmbench.backends.gdbremote.transport import PacketChannel
from kvmbench.errors import (
    RemoteConnectionError,
    RemoteError,
    RemoteProtocolError,
    RemoteRefused,
    RspError,
    SessionStateError,
)
from kvmbench.rsp import breakpoints, features, memory, registers, replies, resume, stops, threads, xfer
from kvmbench.rsp.breakpoints import BreakpointType
from kvmbench.rsp.features import Features
from kvmbench.rsp.hexdata import le_int, show
from kvmbench.rsp.layout import RegisterLayout, x86_64_layout
from kvmbench.rsp.resume import VContAction
from kvmbench.rsp.target_xml import parse_target_xml
from kvmbench.rsp.threads import ThreadId

#: What we tell the stub we understand. multiprocess: thread ids
#: ``pPID.TID``; swbreak/hwbreak: stop reasons; vContSupported: we read
#: ``vCont?``; xmlRegisters: we take target descriptions (gdb sends it too).
CLIENT_FEATURES: Mapping[str, features.FeatureValue] = {
    "multiprocess": True,
    "swbreak": True,
    "hwbreak": True,
    "vContSupported": True,
    "xmlRegisters": "i386",
}
#: PacketSize assumed from a stub that announces none (gdb's own default).
DEFAULT_PACKET_SIZE = 400
#: Our own limits on one packet, whatever the stub announces.
MIN_PACKET_SIZE = 64
MAX_PACKET_SIZE = 64 * 1024
#: Bounds on what a stub may send in many replies (a hostile stub could
#: otherwise answer 'm' for ever).
MAX_XFER_SIZE = 4 << 20
MAX_THREADS = 4096
DEFAULT_TIMEOUT = 5.0
#: How often a step that did not leave one of our breakpoints is taken again.
STEP_RETRIES = 3


class GdbRemoteClient:
    """A connection to one gdbstub, handshake done; create with :meth:`connect`.

    One thread at a time drives it; :meth:`interrupt` and :meth:`close`
    may come from any thread (the notebook's stop button). While the
    target runs (after :meth:`resume`, until :meth:`wait` returns) only
    :meth:`wait`, :meth:`interrupt` and :meth:`close` are allowed.
    """

    def __init__(self, channel: PacketChannel, timeout: float, on_console: Callable[[bytes], None] | None) -> None:
        self._channel = channel
        self.address = channel.address
        #: Seconds a reply to one packet may take.
        self.timeout = timeout
        self._on_console = on_console
        self._lock = threading.RLock()
        self._running = False
        self._closed = False
        #: The stub's qSupported reply.
        self.features = Features({})
        #: The stub's target description, as read (None: it has none).
        self.target_xml: bytes | None = None
        self.layout: RegisterLayout = x86_64_layout(segments=False)
        #: vCont actions the stub has (empty: no vCont, c/s with Hc instead).
        self.vcont_actions: frozenset[str] = frozenset()
        #: Whether ``X`` works: None until the first write finds out.
        self.has_binary_write: bool | None = None
        #: Breakpoint types the stub answered as unsupported (empty reply).
        self.unsupported_breakpoints: set[BreakpointType] = set()
        #: Steps the stub reported done without leaving our breakpoint (retaken).
        self.lost_steps = 0
        # Addresses of our inserted Z0/Z1 breakpoints, with how many of each.
        self._code_breakpoint_counts: dict[int, int] = {}
        #: Where the target stood when we attached (the ``?`` reply).
        self.initial_stop: StopEvent | None = None
        #: The latest stop (attach, resume or ``?``).
        self.last_stop: StopEvent | None = None
        self._selected: dict[str, ThreadId | None] = {"g": None, "c": None}
        self._p_works: bool | None = None
        # Orders interrupt() against resume(): an interrupt that comes
        # before the resume is sent stops the target right after it.
        self._interrupt_lock = threading.Lock()
        self._interrupt_pending = False

    # --- connecting -------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        layout: RegisterLayout | None = None,
        on_console: Callable[[bytes], None] | None = None,
    ) -> "GdbRemoteClient":
        """Attach to the stub at ``HOST:PORT`` or ``unix:PATH``.

        ``layout`` overrides the stub's register description (for stubs
        without target.xml; gdb's default x86-64 core + SSE is assumed
        otherwise). ``on_console`` gets text the stub sends (``O``).
        """
        channel = PacketChannel.connect(address, timeout)
        client = cls(channel, timeout, on_console)
        try:
            client._handshake(layout)
        except BaseException:
            client.close()
            raise
        return client

    def _handshake(self, layout: RegisterLayout | None) -> None:
        reply = self.request(features.build_qsupported(CLIENT_FEATURES), allow_unsupported=True)
        self.features = self._parse(reply, b"qSupported", features.parse_qsupported_reply)
        if self.features.supported("QStartNoAckMode"):
            if replies.is_ok(self.request(b"QStartNoAckMode")):
                self._channel.no_ack = True
        if layout is not None:
            self.layout = layout
        elif self.features.supported("qXfer:features:read"):
            self.target_xml = self.read_xfer("features", "target.xml")
            try:
                self.layout = parse_target_xml(self.target_xml, lambda href: self.read_xfer("features", href))
            except RspError as e:
                raise RemoteProtocolError(f"{self.address}: its target description is broken: {e}") from None
        self.vcont_actions = self._parse(
            self.request(resume.build_vcont_query(), allow_unsupported=True), b"vCont?", resume.parse_vcont_actions_reply
        )
        self.initial_stop = self._stop_event(self.request(b"?"), b"?")

    @property
    def packet_size(self) -> int:
        """The most packet data the stub takes (its PacketSize, bounded)."""
        try:
            size = self.features.packet_size
        except RspError as e:
            raise RemoteProtocolError(f"{self.address}: {e}") from None
        return max(MIN_PACKET_SIZE, min(size or DEFAULT_PACKET_SIZE, MAX_PACKET_SIZE))

    @property
    def no_ack(self) -> bool:
        return self._channel.no_ack

    @property
    def running(self) -> bool:
        return self._running

    # --- packets ----------------------------------------------------------------

    def request(self, packet: bytes, *, allow_unsupported: bool = False, allow_error: bool = False) -> bytes:
        """Send ``packet``, return the stub's reply.

        An ``E NN`` reply raises :class:`RemoteRefused` unless
        ``allow_error``, and so does the empty (unsupported) reply unless
        ``allow_unsupported``.
        """
        with self._lock:
            self._check_stopped(packet)
            self._channel.send(packet)
            reply = self._receive(f"reply to {show(packet, 24)}", time.monotonic() + self.timeout)
        if not allow_error and replies.parse_error_reply(reply) is not None:
            raise RemoteRefused(f"{self.address}: refused {show(packet, 24)}: {replies.parse_error_reply(reply)}")
        if not allow_unsupported and replies.is_unsupported(reply):
            raise RemoteRefused(f"{self.address}: does not support {show(packet, 24)}")
        return reply

    def request_many(self, packets: Sequence[bytes]) -> list[bytes]:
        """Send ``packets`` back to back and return their replies in order:
        one round trip for all. Replies are returned as they are (errors
        included): the caller checks each."""
        with self._lock:
            for packet in packets:
                self._check_stopped(packet)
            self._channel.send_many(packets)
            deadline = time.monotonic() + self.timeout
            return [self._receive(f"reply to {show(packet, 24)}", deadline) for packet in packets]

    def _receive(self, waiting_for: str, deadline: float | None) -> bytes:
        data = self._channel.receive(deadline, waiting_for)
        if data is None:
            self._running = False
            raise RemoteConnectionError(f"{self.address}: closed the connection while we waited for its {waiting_for}")
        return data

    def _check_stopped(self, packet: bytes) -> None:
        if self._closed:
            raise RemoteConnectionError(f"{self.address}: the connection is closed")
        if self._running:
            raise SessionStateError(f"the target is running: cannot send {show(packet, 24)}; interrupt or wait first")

    def _parse(self, reply: bytes, packet: bytes, parse: Callable[[bytes], object]):  # type: ignore[no-untyped-def]
        try:
            return parse(reply)
        except RspError as e:
            raise RemoteProtocolError(f"{self.address}: malformed reply to {show(packet, 24)}: {e}") from None

    def read_xfer(self, object: str, annex: str) -> bytes:  # noqa: A002
        """A whole ``qXfer`` object (``features``, ``threads``...), chunk by chunk."""
        chunk_size = self.packet_size - 8
        data = bytearray()
        while True:
            packet = xfer.build_xfer_read(object, annex, len(data), chunk_size)
            chunk = self._parse(self.request(packet), packet, xfer.parse_xfer_reply)
            data += chunk.data
            if chunk.last:
                return bytes(data)
            if len(data) > MAX_XFER_SIZE:
                raise RemoteProtocolError(f"{self.address}: qXfer {object} {annex!r} goes on past {MAX_XFER_SIZE} bytes")

    # --- threads ----------------------------------------------------------------

    def threads(self) -> tuple[ThreadId, ...]:
        """The stub's threads (a VM's vCPUs), from qfThreadInfo/qsThreadInfo."""
        found: list[ThreadId] = []
        packet = b"qfThreadInfo"
        while True:
            reply = self.request(packet)
            chunk = self._parse(reply, packet, threads.parse_thread_list_reply)
            found += chunk.threads
            if chunk.last:
                return tuple(found)
            if len(found) > MAX_THREADS:
                raise RemoteProtocolError(f"{self.address}: lists more than {MAX_THREADS} threads")
            packet = b"qsThreadInfo"

    def current_thread(self) -> ThreadId | None:
        """The stub's current thread (``qC``), None if it does not say."""
        reply = self.request(b"qC", allow_unsupported=True)
        return None if reply == b"" else self._parse(reply, b"qC", threads.parse_current_thread_reply)

    def select_thread(self, operation: str, thread: ThreadId | None) -> None:
        """``Hg`` (registers, memory) or ``Hc`` (c/s): only when it changes."""
        if thread is None or self._selected.get(operation) == thread:
            return
        self.request(threads.build_set_thread(operation, thread))
        self._selected[operation] = thread

    # --- registers --------------------------------------------------------------

    def read_registers(self, thread: ThreadId | None = None) -> dict[str, int | None]:
        """Every register of :attr:`layout` (``g``); None where unavailable."""
        with self._lock:
            self.select_thread("g", thread)
            reply = self.request(registers.READ_REGISTERS)
        return self._parse(reply, b"g", lambda r: registers.parse_registers_reply(r, self.layout))

    def read_register(self, name: str, thread: ThreadId | None = None) -> int | None:
        """One register by name (``p``, or ``g`` where ``p`` is not answered)."""
        reg = self._register(name)
        with self._lock:
            self.select_thread("g", thread)
            if self._p_works is not False:
                packet = registers.build_read_register(reg.regnum)
                reply = self.request(packet, allow_unsupported=True)
                if reply != b"":
                    self._p_works = True
                    return self._parse(reply, packet, lambda r: registers.parse_register_reply(r, reg))
                self._p_works = False
            return self.read_registers()[name]

    def write_register(self, name: str, value: int, thread: ThreadId | None = None) -> None:
        """Write one register (``P``, or ``g`` then ``G`` where ``P`` is not there)."""
        reg = self._register(name)
        with self._lock:
            self.select_thread("g", thread)
            try:
                packet = registers.build_write_register(reg, value)
            except RspError as e:
                raise RemoteRefused(f"{self.address}: cannot write {name}: {e}") from None
            if self.request(packet, allow_unsupported=True) != b"":
                return
            values = self.read_registers()
            values[name] = value
            self.write_registers(values)

    def write_register_values(self, values: Mapping[str, int], thread: ThreadId | None = None) -> None:
        """Write several registers: their ``P`` packets in one round trip
        (``G`` where ``P`` is not there)."""
        if not values:
            return
        regs = {name: self._register(name) for name in values}
        with self._lock:
            self.select_thread("g", thread)
            try:
                packets = [registers.build_write_register(regs[name], value)
                           for name, value in values.items()]
            except RspError as e:
                raise RemoteRefused(f"{self.address}: cannot write registers: {e}") from None
            replies_ = self.request_many(packets)
            for name, reply in zip(values, replies_):
                if reply == b"":  # no P here: one G with everything
                    merged = self.read_registers()
                    merged.update(values)
                    self.write_registers(merged)
                    return
                error = replies.parse_error_reply(reply)
                if error is not None:
                    raise RemoteRefused(f"{self.address}: refused writing {name}: {error}")

    def write_registers(self, values: Mapping[str, int | None], thread: ThreadId | None = None) -> None:
        """Write registers with ``G`` (those not given are sent unavailable)."""
        with self._lock:
            self.select_thread("g", thread)
            try:
                packet = registers.build_write_registers(values, self.layout)
            except RspError as e:
                raise RemoteRefused(f"{self.address}: cannot write registers: {e}") from None
            self.request(packet)

    def _register(self, name: str):  # type: ignore[no-untyped-def]
        reg = self.layout.by_name(name)
        if reg is None:
            raise RemoteRefused(f"{self.address}: the target describes no register {name!r}")
        return reg

    # --- memory -----------------------------------------------------------------

    @property
    def _memory_chunk(self) -> int:
        # Each byte is two hex digits in the reply.
        return max(1, (self.packet_size - 8) // 2)

    def read_memory(self, address: int, length: int, thread: ThreadId | None = None) -> bytes:
        """``length`` bytes at virtual ``address`` (as the thread's vCPU sees
        memory), in as many ``m`` packets as the stub's packet size needs."""
        out = bytearray()
        with self._lock:
            self.select_thread("g", thread)
            while len(out) < length:
                at = address + len(out)
                packet = memory.build_read_memory(at, min(self._memory_chunk, length - len(out)))
                reply = self.request(packet, allow_error=True)
                error = replies.parse_error_reply(reply)
                data = b"" if error else self._parse(reply, packet, memory.parse_memory_reply)
                if not data:
                    raise RemoteRefused(f"{self.address}: cannot read memory at {at:#x} ({error or 'no data'})")
                out += data
        return bytes(out[:length])

    def read_memory_many(self, ranges: Sequence[tuple[int, int]],
                         thread: ThreadId | None = None) -> list[bytes | None]:
        """Several small reads (each within one packet) in one round trip;
        None for a range the stub could not read."""
        with self._lock:
            self.select_thread("g", thread)
            packets = [memory.build_read_memory(address, min(length, self._memory_chunk))
                       for address, length in ranges]
            out: list[bytes | None] = []
            for (_, length), packet, reply in zip(ranges, packets, self.request_many(packets)):
                if replies.parse_error_reply(reply) is not None:
                    out.append(None)
                    continue
                data = self._parse(reply, packet, memory.parse_memory_reply)
                out.append(data if len(data) == length else None)
            return out

    def write_memory(self, address: int, data: bytes, thread: ThreadId | None = None) -> None:
        """Write ``data`` at ``address`` (``X`` where the stub has it, else ``M``)."""
        if not data:
            return
        with self._lock:
            self.select_thread("g", thread)
            offset = 0
            while offset < len(data):
                at = address + offset
                if self.has_binary_write is not False:
                    # Escaping may double the bytes: leave room for it.
                    piece = data[offset : offset + max(1, (self.packet_size - 32) // 2)]
                    reply = self.request(memory.build_write_binary(at, piece), allow_unsupported=True, allow_error=True)
                    if reply == b"":
                        self.has_binary_write = False  # no X here (QEMU 7.2): M from now on
                        continue
                    self.has_binary_write = True
                else:
                    piece = data[offset : offset + self._memory_chunk]
                    reply = self.request(memory.build_write_memory(at, piece), allow_error=True)
                self._check_write(reply, at)
                offset += len(piece)

    def _check_write(self, reply: bytes, at: int) -> None:
        error = replies.parse_error_reply(reply)
        if error is not None:
            raise RemoteRefused(f"{self.address}: cannot write memory at {at:#x} ({error})")
        if not replies.is_ok(reply):
            raise RemoteProtocolError(f"{self.address}: a memory write at {at:#x} got {show(reply)}, not OK")

    # --- breakpoints and watchpoints --------------------------------------------

    def insert_breakpoint(self, type: BreakpointType, address: int, kind: int = 1) -> bool:  # noqa: A002
        """``Z``: True if the stub accepted, False if it refused (``E NN``:
        out of slots, bad address) or lacks the type (then also recorded in
        :attr:`unsupported_breakpoints`). For watchpoints ``kind`` is the
        length watched; for breakpoints the instruction length (1 on x86)."""
        return self._breakpoint(True, type, address, kind)

    def remove_breakpoint(self, type: BreakpointType, address: int, kind: int = 1) -> bool:  # noqa: A002
        """``z``: True if the stub removed it."""
        return self._breakpoint(False, type, address, kind)

    def _breakpoint(self, insert: bool, type: BreakpointType, address: int, kind: int) -> bool:  # noqa: A002
        try:
            packet = breakpoints.build_breakpoint(insert, type, address, kind)
        except RspError as e:
            raise RemoteRefused(f"{self.address}: {e}") from None
        reply = self.request(packet, allow_unsupported=True, allow_error=True)
        if replies.is_ok(reply):
            if not BreakpointType(type).is_watchpoint:
                count = self._code_breakpoint_counts.get(address, 0) + (1 if insert else -1)
                if count > 0:
                    self._code_breakpoint_counts[address] = count
                else:
                    self._code_breakpoint_counts.pop(address, None)
            return True
        if reply == b"":
            self.unsupported_breakpoints.add(BreakpointType(type))
            return False
        if replies.parse_error_reply(reply) is not None:
            return False
        raise RemoteProtocolError(f"{self.address}: {show(packet)} got {show(reply)}, neither OK nor an error")

    # --- run control ------------------------------------------------------------

    def resume(self, actions: Sequence[VContAction]) -> None:
        """Resume with ``vCont`` actions (see :mod:`kvmbench.rsp.resume`);
        return at once: :meth:`wait` for the stop. Without ``vCont`` only
        one ``c`` or ``s`` for one thread (or all) can be expressed."""
        with self._lock:
            if self.vcont_actions and {a.action for a in actions} <= self.vcont_actions:
                try:
                    packet = resume.build_vcont(actions)
                except RspError as e:
                    raise RemoteRefused(f"{self.address}: {e}") from None
            else:
                packet = self._plain_resume(actions)
            self._check_stopped(packet)
            with self._interrupt_lock:
                self._channel.send(packet)
                self._running = True
                if self._interrupt_pending:
                    self._interrupt_pending = False
                    self._channel.send_interrupt()

    def _plain_resume(self, actions: Sequence[VContAction]) -> bytes:
        if len(actions) != 1 or actions[0].action not in ("c", "s"):
            raise RemoteRefused(f"{self.address}: has no vCont for {[a.action for a in actions]}; only one c or s")
        action = actions[0]
        self.select_thread("c", action.thread or threads.ALL_THREADS)
        return resume.build_continue() if action.action == "c" else resume.build_step()

    def wait(self, timeout: float | None = None) -> StopEvent:
        """Wait for the running target to stop (``timeout`` seconds, None:
        as long as it takes; :meth:`interrupt` stops it from elsewhere)."""
        with self._lock:
            if not self._running:
                raise SessionStateError("the target is not running: nothing to wait for")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                data = self._channel.receive(deadline, "stop reply")
                if data is None:
                    self._running = False
                    self._closed = True
                    return TargetDisconnected()
                reply = self._parse(data, b"resume", stops.parse_stop_reply)
                if isinstance(reply, stops.ConsoleOutput):
                    if self._on_console is not None:
                        self._on_console(reply.text)
                    continue
                self._running = False
                with self._interrupt_lock:
                    self._interrupt_pending = False  # the target stopped: nothing left to stop
                return self._typed(reply)

    def cont(self, thread: ThreadId | None = None, timeout: float | None = None) -> StopEvent:
        """Continue (every thread, or ``thread`` alone) and wait for the stop."""
        self.resume([VContAction("c", thread)])
        return self.wait(timeout)

    def step(
        self, thread: ThreadId | None = None, timeout: float | None = None, *, pc: int | None = None
    ) -> StopEvent:
        """Step one instruction (of ``thread``, others stay stopped) and wait.

        The stop's ``registers`` always hold the pc (read with one ``p``
        where the stub does not send it). A step from an address where a
        breakpoint of ours (Z0/Z1) is inserted may be lost: QEMU 7.2 under
        TCG now and then reports it done with the pc unmoved, its
        breakpoint having fired first (measured here: about one step in
        20,000 to 60,000), so such a step is taken again, at most
        :data:`STEP_RETRIES` times, and counted in :attr:`lost_steps`. ``pc`` is where the thread stands, if
        the caller knows (it saves reading it).
        """
        if thread is None:
            thread = self._step_thread()
        pc_name = self._pc_name()
        if pc is None and pc_name is not None and self._code_breakpoint_counts:
            pc = self.read_register(pc_name, thread=thread)
        for _ in range(STEP_RETRIES + 1):
            self.resume([VContAction("s", thread)])
            stop = self.wait(timeout if timeout is not None else self.timeout)
            if not isinstance(stop, TargetStop) or pc_name is None:
                return stop
            after = stop.registers.get(pc_name)
            if after is None:
                after = self.read_register(pc_name, thread=stop.thread)
                stop = dataclasses.replace(stop, registers={**stop.registers, pc_name: after})
                self.last_stop = stop
            if after != pc or pc not in self._code_breakpoint_counts or not stop.is_trap:
                return stop
            self.lost_steps += 1
        return stop

    def _pc_name(self) -> str | None:
        for name in ("rip", "pc", "eip"):
            if self.layout.by_name(name) is not None:
                return name
        return None

    def _step_thread(self) -> ThreadId | None:
        stop = self.last_stop
        return stop.thread if isinstance(stop, TargetStop) else None

    def interrupt(self) -> None:
        """Ask the running target to stop (the 0x03 byte); any thread. The
        waiting :meth:`wait` returns the stop (signal 2 on QEMU). Asked
        while the target is stopped, the next :meth:`resume` stops at once
        (stubs ignore 0x03 while stopped, so it would be lost)."""
        with self._interrupt_lock:
            if self._running:
                self._channel.send_interrupt()
            else:
                self._interrupt_pending = True

    def stop_reason(self) -> StopEvent:
        """Why the target is stopped (``?``). QEMU 7.2 takes ``?`` for a new
        debugger attaching and removes every breakpoint it holds."""
        return self._stop_event(self.request(b"?"), b"?")

    def _stop_event(self, reply: bytes, packet: bytes) -> StopEvent:
        parsed = self._parse(reply, packet, stops.parse_stop_reply)
        if isinstance(parsed, (stops.ConsoleOutput, stops.NoResumed, stops.ThreadExited)):
            raise RemoteProtocolError(f"{self.address}: {show(packet)} got {show(reply)}, not where the target stands")
        return self._typed(parsed)

    def _typed(self, reply: stops.StopReply) -> StopEvent:
        if isinstance(reply, stops.Stopped):
            # The stopped thread is now the stub's current one for registers
            # and resuming (GDB manual, "Stop Reply Packets"; QEMU sets both).
            self._selected = {"g": reply.thread, "c": reply.thread}
            registers_by_name: dict[str, int | None] = {}
            for regnum, raw in reply.registers.items():
                reg = self.layout.by_number(regnum)
                if reg is not None and len(raw) == reg.size:
                    registers_by_name[reg.name] = le_int(raw)
            stop = TargetStop(reply.signal, reply.thread, reply.watch, reply.swbreak, reply.hwbreak, registers_by_name)
            self.last_stop = stop
            return stop
        if isinstance(reply, stops.Exited):
            return TargetExit(reply.status)
        if isinstance(reply, stops.Terminated):
            return TargetKilled(reply.signal)
        raise RemoteProtocolError(f"{self.address}: stop reply {reply!r} is not one this client handles")

    # --- ending -----------------------------------------------------------------

    def detach(self) -> None:
        """``D``: leave the target running on its own, then close."""
        try:
            self.request(b"D", allow_unsupported=True, allow_error=True)
        finally:
            self.close()

    def kill(self) -> None:
        """``k``: ask the stub to end the target (QEMU quits), then close."""
        try:
            if not self._closed and not self._running:
                self._channel.send(b"k")
        except RemoteError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (idempotent, any thread)."""
        self._closed = True
        self._channel.close()

    def __enter__(self) -> "GdbRemoteClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

