"""One client's side of the protocol: a packet in, the reply out, each
packet answered from the :class:`~kvmbench.engine.session.Session`.

Packets (GDB manual, "Packets" and "General Query Packets") are dispatched
by prefix to one method each; parsing and building are
:mod:`kvmbench.rsp`'s. What ``qSupported`` announces is computed from the
handler table (:data:`GdbStub.HANDLERS`) and the stop reasons this stub
reports, never listed by hand.

Errors: a malformed packet (:class:`~kvmbench.errors.RspError`) or a
refusal of the engine (any :class:`~kvmbench.errors.KvmbenchError`: the
guest is running under the notebook, a breakpoint that cannot be served,
memory that is not mapped) is answered ``E NN``, or ``E.message`` to a
client that announced ``error-message+``; the session is never left
changed halfway by a bad packet.

Run control (``c``, ``s``, ``vCont``) blocks the calling thread until the
guest stops; :meth:`GdbStub.interrupt` (the 0x03 byte, from the
connection's reader thread) pauses it meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from kvmbench.engine.model import RunState, Stop, StopReason
from kvmbench.engine.session import Session
from kvmbench.errors import GuestMemoryError, KvmbenchError, RspError, SessionStateError
from kvmbench.gdbserver import lldb
from kvmbench.gdbserver.inserts import ClientInserts
from kvmbench.gdbserver.monitor import run_monitor
from kvmbench.gdbserver.registers import EXPEDITED, G_REGISTERS, LAYOUT, GuestRegisters, register_by_number
from kvmbench.gdbserver.stopreply import VCPU_THREAD, ClientStopFeatures, stop_reply
from kvmbench.rsp.breakpoints import parse_breakpoint
from kvmbench.rsp.features import announced_packets, build_qsupported_reply, parse_qsupported
from kvmbench.rsp.hexdata import from_hex, le_bytes, parse_hex_int, to_hex
from kvmbench.rsp.memory import build_memory_reply, parse_read_memory, parse_write_memory, parse_write_binary
from kvmbench.rsp.registers import build_register_reply, encode_register, parse_read_register, parse_write_register, parse_write_registers
from kvmbench.rsp.replies import OK, UNSUPPORTED, build_error_reply
from kvmbench.rsp.resume import build_vcont_actions_reply, parse_continue_or_step, parse_vcont
from kvmbench.rsp.stops import ConsoleOutput, StopReply, build_stop_reply
from kvmbench.rsp.target_xml import build_target_xml
from kvmbench.rsp.threads import ALL, ANY, build_current_thread_reply, build_thread_list_reply, parse_set_thread, parse_thread_alive
from kvmbench.rsp.xfer import build_xfer_reply, parse_xfer_read

#: The most packet data we take, announced as PacketSize; memory replies are
#: capped to fit it.
PACKET_SIZE = 0x4000
#: How often a pending interrupt is re-sent while a run has not begun yet.
_INTERRUPT_RETRY = 0.02
#: Error codes (their meaning is ours; GDB prints them).
E_BAD_PACKET, E_REFUSED, E_MEMORY, E_STATE = 0x01, 0x02, 0x0E, 0x10

_SEND = Callable[[bytes], None]


class Detach(Exception):
    """The client detached or killed: reply (if any) sent, connection to end."""

    def __init__(self, reply: bytes | None, end_session: bool = False) -> None:
        super().__init__("detach")
        self.reply = reply
        self.end_session = end_session


class GdbStub:
    """Answers one client's packets from ``session``.

    ``image`` is the guest's ELF (``qXfer:exec-file:read``); ``send_output``
    sends a packet while a command runs (``O`` output of ``monitor``);
    ``on_stop`` is told of every stop a run of this client ended in;
    ``kill_ends_session``: ``k`` closes the session (the command-line
    server) instead of only detaching (a notebook's shared session).
    """

    def __init__(
        self,
        session: Session,
        *,
        image: Path | None = None,
        send_output: _SEND | None = None,
        on_stop: Callable[[Stop], None] | None = None,
        kill_ends_session: bool = False,
    ) -> None:
        self.session = session
        self.image = image if image is not None else session.image
        self.registers = GuestRegisters(session)
        self.inserts = ClientInserts(session)
        self.send_output = send_output or (lambda packet: None)
        self.on_stop = on_stop
        self.kill_ends_session = kill_ends_session
        self.client = ClientStopFeatures()
        self.error_messages = False
        self.no_ack = False
        #: Set when the client asked for no-ack mode: the connection stops
        #: acknowledging after the OK to QStartNoAckMode.
        self.no_ack_requested = False
        self._run_pending = threading.Event()
        self._interrupted = threading.Event()
        self._target_xml = build_target_xml(LAYOUT)
        self._thread_list_sent = False

    # --- dispatch ------------------------------------------------------------

    def handle(self, packet: bytes) -> bytes:
        """The reply to ``packet``; raises :class:`Detach` for ``D`` and ``k``."""
        handler = self._handler_for(packet)
        if handler is None:
            return UNSUPPORTED
        try:
            return handler(self, packet)
        except Detach:
            raise
        except RspError as e:
            return self._error(E_BAD_PACKET, str(e))
        except GuestMemoryError as e:
            return self._error(E_MEMORY, str(e))
        except SessionStateError as e:
            return self._error(E_STATE, str(e))
        except KvmbenchError as e:
            return self._error(E_REFUSED, str(e))

    @classmethod
    def _handler_for(cls, packet: bytes) -> Callable[["GdbStub", bytes], bytes] | None:
        for prefix in cls._PREFIXES:
            if packet.startswith(prefix):
                name = cls.HANDLERS[prefix]
                if name.endswith("=") and packet != prefix:
                    continue  # exact-match packets
                return getattr(cls, name.rstrip("="))
        return None

    def _error(self, code: int, message: str) -> bytes:
        if self.error_messages:
            text = message.replace("#", "?").replace("$", "?").replace("}", "?").replace("*", "?")
            return b"E." + text.encode("utf-8", "replace")[:200]
        return build_error_reply(code)

    # --- the connection's handshake ------------------------------------------

    def _qsupported(self, packet: bytes) -> bytes:
        theirs = parse_qsupported(packet)
        self.client = ClientStopFeatures(swbreak=theirs.supported("swbreak"),
                                         hwbreak=theirs.supported("hwbreak"))
        self.error_messages = theirs.supported("error-message")
        features = announced_packets(self.implemented())
        # Stop reasons we report, to a client that understands them; vCont
        # is announced so gdb asks vCont? at once.
        features.update({"swbreak": True, "hwbreak": True, "vContSupported": True})
        if self.error_messages:
            features["error-message"] = True
        return build_qsupported_reply(PACKET_SIZE, features)

    @classmethod
    def implemented(cls) -> list[str]:
        """The names of the packets this stub handles (for qSupported)."""
        names = []
        for prefix in cls.HANDLERS:
            text = prefix.decode()
            names.append(text.rstrip(":"))
        names += [f"qXfer:{obj}:read" for obj in cls.XFER_OBJECTS]
        return names

    def _no_ack(self, packet: bytes) -> bytes:
        self.no_ack_requested = True
        return OK

    def _query_halt_reason(self, packet: bytes) -> bytes:
        session = self.session
        if session.state is RunState.EXITED and session.last_stop is not None:
            return build_stop_reply(self._reply_for(session.last_stop))
        if session.state is RunState.CLOSED:
            return b"X09"
        stop = session.last_stop
        if stop is None or session.state is RunState.RUNNING:
            stop = Stop(StopReason.STEP, None if session.state is RunState.RUNNING else session.pc)
        return build_stop_reply(self._reply_for(stop))

    def _attached(self, packet: bytes) -> bytes:
        return b"1"  # attached to a guest that lives on: detach, never kill

    def _set_thread(self, packet: bytes) -> bytes:
        thread = parse_set_thread(packet).thread
        if thread.tid not in (ALL, ANY, VCPU_THREAD.tid):
            return self._error(E_REFUSED, f"no thread {thread}")
        return OK

    def _thread_alive(self, packet: bytes) -> bytes:
        thread = parse_thread_alive(packet)
        if thread.tid != VCPU_THREAD.tid:
            return self._error(E_REFUSED, f"no thread {thread}")
        return OK

    def _current_thread(self, packet: bytes) -> bytes:
        return build_current_thread_reply(VCPU_THREAD)

    def _first_thread(self, packet: bytes) -> bytes:
        return build_thread_list_reply([VCPU_THREAD], last=False)

    def _next_thread(self, packet: bytes) -> bytes:
        return build_thread_list_reply([], last=True)

    def _thread_extra(self, packet: bytes) -> bytes:
        return to_hex(f"vCPU 0, {self.session.state.value}".encode())

    def _xfer(self, packet: bytes) -> bytes:
        request = parse_xfer_read(packet)
        document = self.XFER_OBJECTS.get(request.object)
        if document is None:
            return UNSUPPORTED
        data = document(self, request.annex)
        if data is None:
            return self._error(E_REFUSED, f"no {request.object} document {request.annex!r}")
        if request.length == 0:
            return self._error(E_BAD_PACKET, "qXfer read of 0 bytes")  # 'm' and nothing: a read without end
        if request.offset > len(data):
            return self._error(E_BAD_PACKET, f"offset {request.offset} is past the document's end")
        return build_xfer_reply(data, request.offset, min(request.length, PACKET_SIZE - 16))

    def _features_document(self, annex: str) -> bytes | None:
        return self._target_xml if annex == "target.xml" else None

    def _exec_file_document(self, annex: str) -> bytes | None:
        return str(self.image).encode() if self.image is not None else None

    def _threads_document(self, annex: str) -> bytes | None:
        state = self.session.state.value
        return (b'<?xml version="1.0"?>\n<threads>\n'
                b'  <thread id="%s" core="0" name="vcpu0">%s</thread>\n</threads>\n'
                % (str(VCPU_THREAD).encode(), state.encode()))

    XFER_OBJECTS: dict[str, Callable[["GdbStub", str], bytes | None]] = {
        "features": _features_document,
        "exec-file": _exec_file_document,
        "threads": _threads_document,
    }

    # --- registers ------------------------------------------------------------

    def _read_registers(self, packet: bytes) -> bytes:
        values = self.registers.read_g()
        return b"".join(encode_register(values.get(r.name), r) for r in G_REGISTERS)

    def _write_registers(self, packet: bytes) -> bytes:
        self.registers.write_many(parse_write_registers(packet, LAYOUT))
        return OK

    def _read_register(self, packet: bytes) -> bytes:
        reg = register_by_number(parse_read_register(packet))
        return build_register_reply(self.registers.read(reg), reg)

    def _write_register(self, packet: bytes) -> bytes:
        write = parse_write_register(packet)
        reg = register_by_number(write.regnum)
        if len(write.value) != reg.size:
            raise RspError(f"{reg.name} takes {reg.size} bytes, not {len(write.value)}")
        self.registers.write(reg, int.from_bytes(write.value, "little"))
        return OK

    def _expedited(self) -> dict[int, bytes]:
        return {r.regnum: le_bytes(self.session.regs[r.name], r.size) for r in EXPEDITED}

    # --- memory ----------------------------------------------------------------

    def _read_memory(self, packet: bytes) -> bytes:
        request = parse_read_memory(packet)
        length = min(request.length, PACKET_SIZE // 2 - 8)
        data = self._read_readable(request.address, length)
        if not data and length:
            return self._error(E_MEMORY, f"cannot read memory at {request.address:#x}")
        return build_memory_reply(data)

    def _read_readable(self, address: int, length: int) -> bytes:
        """As many bytes from ``address`` as can be read, up to the first
        unreadable page (an ``m`` reply may be short, GDB manual)."""
        mem = self.session.mem
        try:
            return mem.read(address, length)
        except GuestMemoryError:
            pass
        out = bytearray()
        while len(out) < length:
            here = address + len(out)
            chunk = min(length - len(out), 4096 - (here & 0xFFF))
            try:
                out += mem.read(here, chunk)
            except GuestMemoryError:
                break
        return bytes(out)

    def _write_memory(self, packet: bytes) -> bytes:
        write = parse_write_memory(packet)
        self.session.mem.write(write.address, write.data)
        return OK

    def _write_memory_binary(self, packet: bytes) -> bytes:
        write = parse_write_binary(packet)
        if write.data:
            self.session.mem.write(write.address, write.data)
        return OK

    # --- breakpoints -----------------------------------------------------------

    def _insert(self, packet: bytes) -> bytes:
        request = parse_breakpoint(packet)
        if request.insert:
            self.inserts.insert(request)
        else:
            self.inserts.remove(request)
        return OK

    # --- running ----------------------------------------------------------------

    def _continue(self, packet: bytes) -> bytes:
        action, address = parse_continue_or_step(packet)
        return self._resume(action, address)

    def _continue_signal(self, packet: bytes) -> bytes:
        # "C sig[;addr]": a VM has no signals to deliver; resume as c/s.
        head, _, address = packet[1:].partition(b";")
        parse_hex_int(head, "signal")
        return self._resume(packet[:1].lower().decode(), parse_hex_int(address, "address") if address else None)

    def _vcont_query(self, packet: bytes) -> bytes:
        return build_vcont_actions_reply(self.VCONT_ACTIONS)

    VCONT_ACTIONS = ("c", "C", "s", "S", "t")

    def _vcont(self, packet: bytes) -> bytes:
        actions = parse_vcont(packet)
        for action in actions:
            if action.action not in self.VCONT_ACTIONS:
                return self._error(E_BAD_PACKET, f"vCont action {action.action!r} is not supported")
            if action.thread is not None and action.thread.tid not in (ALL, ANY, VCPU_THREAD.tid):
                continue
            if action.action == "t":
                if self.session.state is RunState.RUNNING:
                    self.interrupt()
                return OK
            return self._resume(action.action.lower(), None)
        return OK  # no action for our thread: nothing resumes

    def _resume(self, action: str, address: int | None) -> bytes:
        session = self.session
        self._run_pending.set()
        try:
            if address is not None:
                session.regs.rip = address
            if action == "c":
                self.inserts.settle()
            stop = session.cont() if action == "c" else session.stepi(1)
        finally:
            self._run_pending.clear()
            self._interrupted.clear()
        if self.on_stop is not None:
            self.on_stop(stop)
        return build_stop_reply(self._reply_for(stop))

    def _reply_for(self, stop: Stop) -> StopReply:
        session = self.session

        def report(number: int | None) -> bool:
            # A request this client removed (deferred) is not reported; the
            # notebook's own requests are.
            return not self.inserts.owns(number, active=False) or self.inserts.owns(number)

        def registers() -> dict[int, bytes]:
            if session.state is RunState.RUNNING or session.state is RunState.CLOSED:
                return {}
            return self._expedited()

        return stop_reply(stop, registers, self.client, session.watchpoints.get, report)

    @staticmethod
    def is_resume(packet: bytes) -> bool:
        """``c``, ``s``, ``C``, ``S`` or ``vCont;``: a packet that runs the guest."""
        return packet[:1] in (b"c", b"s", b"C", b"S") or packet.startswith(b"vCont;")

    def note_queued(self, packet: bytes) -> None:
        """The connection queued ``packet``: an interrupt from now on is meant
        for the run it starts, even if the run has not begun yet."""
        if self.is_resume(packet):
            self._run_pending.set()

    def interrupt(self) -> None:
        """0x03 (from any thread): pause this client's run. If the run has
        not begun yet, keep asking until it has. Outside a run of this
        client it does nothing (the guest may be the notebook's)."""
        if not self._run_pending.is_set():
            return
        self._interrupted.set()
        if self.session.state is RunState.RUNNING:
            self.session.pause()
            return
        threading.Thread(target=self._keep_interrupting, name="gdbserver-interrupt",
                         daemon=True).start()

    def _keep_interrupting(self) -> None:
        while self._run_pending.is_set() and self._interrupted.is_set():
            if self.session.state is RunState.RUNNING:
                self.session.pause()
                return
            time.sleep(_INTERRUPT_RETRY)

    # --- monitor -----------------------------------------------------------------

    def _monitor(self, packet: bytes) -> bytes:
        line = from_hex(packet[len(b"qRcmd,"):]).decode("utf-8", "replace")
        text = run_monitor(self.session, line)
        for start in range(0, len(text), 1024):
            self.send_output(build_stop_reply(ConsoleOutput(text[start:start + 1024].encode())))
        return OK

    # --- leaving ---------------------------------------------------------------------

    def _detach(self, packet: bytes) -> bytes:
        self.release()
        raise Detach(OK)

    def _kill(self, packet: bytes) -> bytes:
        self.release()
        raise Detach(OK if packet.startswith(b"vKill") else None, end_session=self.kill_ends_session)

    def release(self) -> None:
        """Remove this client's breakpoints and watchpoints (the session lives on)."""
        try:
            self.inserts.release()
        except KvmbenchError:
            pass  # the session is closed or running under someone else

    # --- lldb --------------------------------------------------------------------------

    def _host_info(self, packet: bytes) -> bytes:
        return lldb.host_info()

    def _process_info(self, packet: bytes) -> bytes:
        return lldb.process_info()

    def _register_info(self, packet: bytes) -> bytes:
        regnum = parse_hex_int(packet[len(b"qRegisterInfo"):], "register number")
        return lldb.register_info(regnum)

    def _symbol(self, packet: bytes) -> bytes:
        return OK  # no symbols wanted from the client

    def _empty_reply(self, packet: bytes) -> bytes:
        return UNSUPPORTED

    #: Packet prefix: handler name (``=`` at the end: the packet must equal
    #: the prefix). Longer prefixes first where they share a start.
    HANDLERS: dict[bytes, str] = {
        b"qSupported": "_qsupported",
        b"QStartNoAckMode": "_no_ack=",
        b"?": "_query_halt_reason=",
        b"qAttached": "_attached",
        b"qC": "_current_thread=",
        b"qfThreadInfo": "_first_thread=",
        b"qsThreadInfo": "_next_thread=",
        b"qThreadExtraInfo,": "_thread_extra",
        b"qXfer:": "_xfer",
        b"qRcmd,": "_monitor",
        b"qSymbol:": "_symbol",
        b"qHostInfo": "_host_info=",
        b"qProcessInfo": "_process_info=",
        b"qRegisterInfo": "_register_info",
        b"QEnableErrorStrings": "_enable_error_strings=",
        b"H": "_set_thread",
        b"T": "_thread_alive",
        b"g": "_read_registers=",
        b"G": "_write_registers",
        b"p": "_read_register",
        b"P": "_write_register",
        b"m": "_read_memory",
        b"M": "_write_memory",
        b"X": "_write_memory_binary",
        b"Z": "_insert",
        b"z": "_insert",
        b"vCont?": "_vcont_query=",
        b"vCont;": "_vcont",
        b"vKill": "_kill",
        b"vMustReplyEmpty": "_empty_reply=",
        b"c": "_continue",
        b"s": "_continue",
        b"C": "_continue_signal",
        b"S": "_continue_signal",
        b"D": "_detach",
        b"k": "_kill=",
    }

    def _enable_error_strings(self, packet: bytes) -> bytes:
        self.error_messages = True  # lldb's way of asking for E.message
        return OK

    _PREFIXES: tuple[bytes, ...] = ()


# Longest prefixes first, so "qC" does not take "qCRC" nor "vCont?" take "vCont;".
GdbStub._PREFIXES = tuple(sorted(GdbStub.HANDLERS, key=len, reverse=True))
