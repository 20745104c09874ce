"""The host's end of the command channel to kvmbench's init (ttyS1).

Messages both ways are an 8-byte header, ``b"KVB"``, a type byte and the
payload's length (little-endian u32), then the payload (see init/init.c
for the types). A command's output arrives only inside counted payloads,
so nothing it prints can pass for a header or an exit status.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from dataclasses import dataclass

from kvmbench.errors import KvmbenchError

MAGIC = b"KVB"
HEADER = struct.Struct("<3scI")
MAX_PAYLOAD = 1 << 20

class ChannelError(KvmbenchError):
    """The guest's init did not answer as the protocol says."""

class CommandTimeout(ChannelError):
    """A guest command ran past its timeout (it was killed)."""

    def __init__(self, command: str, timeout: float, output: str) -> None:
        super().__init__(f"guest command {command!r} did not finish within {timeout:g} s (killed)")
        self.output = output

@dataclass(frozen=True)
class CommandResult:
    """What a guest shell command printed (stdout and stderr, in order) and
    its wait status (as waitpid(2) gives it)."""

    output: str
    wait_status: int

    @property
    def exit_code(self) -> int | None:
        """The exit code, None when a signal ended the command."""
        return (self.wait_status >> 8) & 0xFF if self.wait_status & 0x7F == 0 else None

    @property
    def signal(self) -> int | None:
        return self.wait_status & 0x7F or None

    @property
    def ok(self) -> bool:
        return self.wait_status == 0

class GuestChannel:
    """A connected channel socket; one request at a time (not thread-safe:
    its owner serialises requests)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._tokens = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def send(self, kind: str, payload: bytes = b"") -> None:
        if len(payload) > MAX_PAYLOAD:
            raise ChannelError(f"a {len(payload)}-byte request is over the channel's {MAX_PAYLOAD}")
        self._sock.sendall(HEADER.pack(MAGIC, kind.encode(), len(payload)) + payload)

    def receive(self, deadline: float) -> tuple[str, bytes]:
        """The next message; ChannelError if none is whole by ``deadline``
        (a time.monotonic() value), TimeoutError kept for callers to map."""
        while True:
            if len(self._buffer) >= HEADER.size:
                magic, kind, length = HEADER.unpack_from(self._buffer)
                if magic != MAGIC:
                    raise ChannelError(f"the guest's init sent garbage ({bytes(self._buffer[:8]).hex()})")
                if length > MAX_PAYLOAD:
                    raise ChannelError(f"the guest's init announced a {length}-byte message")
                if len(self._buffer) >= HEADER.size + length:
                    payload = bytes(self._buffer[HEADER.size : HEADER.size + length])
                    del self._buffer[: HEADER.size + length]
                    return kind.decode("latin-1"), payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError from None
            if not data:
                raise ChannelError("the guest's command channel closed (QEMU exited?)")
            self._buffer += data

    def wait_ready(self, timeout: float) -> str:
        """Wait for the init's one 'R' message; returns the kernel release."""
        try:
            kind, payload = self.receive(time.monotonic() + timeout)
        except TimeoutError:
            raise ChannelError(f"the guest's init did not report ready within {timeout:g} s") from None
        if kind != "R":
            raise ChannelError(f"the guest's init sent {kind!r} before its ready message")
        return payload.decode(errors="replace")

    def sync(self, timeout: float) -> None:
        """Ping until the answer carries our token: anything older (a
        reply the host never read before a snapshot) is dropped."""
        token = str(next(self._tokens)).encode()
        self.send("P", b"sync-" + token)
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, payload = self.receive(deadline)
            except TimeoutError:
                raise ChannelError(f"the guest's init did not answer within {timeout:g} s") from None
            if kind == "p" and payload == b"sync-" + token:
                return

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command`` with the guest's /bin/sh -c and wait for it."""
        return self.start(command).wait(timeout)

    def start(self, command: str) -> "RunningCommand":
        """Start ``command`` and return at once; the caller runs the guest
        and collects the result (one command at a time)."""
        self.send("C", command.encode())
        return RunningCommand(self, command)

    def read_file(self, path: str, timeout: float) -> bytes:
        """A guest file's contents (a /proc file is read to its end)."""
        self.send("F", path.encode())
        deadline = time.monotonic() + timeout
        data = bytearray()
        while True:
            try:
                kind, payload = self.receive(deadline)
            except TimeoutError:
                raise ChannelError(f"reading {path} from the guest took over {timeout:g} s") from None
            if kind == "D":
                data += payload
            elif kind == "Z":
                (err,) = struct.unpack("<I", payload)
                if err:

                    raise ChannelError(f"the guest cannot read {path}: {os.strerror(err)}")
                return bytes(data)
            else:
                raise ChannelError(f"unexpected {kind!r} message while reading {path}")


class RunningCommand:
    """A guest command started with :meth:`GuestChannel.start`."""

    def __init__(self, channel: GuestChannel, command: str) -> None:
        self.channel = channel
        self.command = command
        self._output = bytearray()
        self.result: CommandResult | None = None

    @property
    def output(self) -> str:
        """What the command printed so far."""
        return self._output.decode(errors="replace")

    def poll(self, timeout: float = 0.0) -> CommandResult | None:
        """Take what has arrived within ``timeout`` seconds; the result once
        the command has ended, else None."""
        deadline = time.monotonic() + timeout
        while self.result is None:
            try:
                kind, payload = self.channel.receive(deadline)
            except TimeoutError:
                return None
            if kind == "O":
                self._output += payload
            elif kind == "X":
                (status,) = struct.unpack("<I", payload)
                self.result = CommandResult(self._output.decode(errors="replace"), status)
            else:
                raise ChannelError(f"unexpected {kind!r} message while a command ran")
        return self.result

    def wait(self, timeout: float) -> CommandResult:
        """The result; after ``timeout`` seconds the command is killed and
        :class:`CommandTimeout` raised."""
        result = self.poll(timeout)
        if result is None:
            self.kill()
            raise CommandTimeout(self.command, timeout, self.output)
        return result

    def kill(self) -> CommandResult:
        """Kill the command's process group and wait for its end."""
        if self.result is None:
            self.channel.send("K")
            if self.poll(10.0) is None:
                raise ChannelError("the guest's init did not end a killed command")
        assert self.result is not None
        return self.result
