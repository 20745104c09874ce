"""The GDB remote serial protocol as pure functions and data, for both sides
of a connection: kvmbench's client of gdbstubs
(:mod:`kvmbench.backends.gdbremote`) and its GDB server.

Reference: the GDB manual, appendix "Remote Protocol" (and "Target
Descriptions"). Nothing here does I/O; every malformed input raises
:class:`kvmbench.errors.RspError` and nothing else.

- :mod:`~kvmbench.rsp.hexdata`: hex numbers and byte strings
- :mod:`~kvmbench.rsp.framing`: ``$data#cs``, checksums, escapes, run-length encoding
- :mod:`~kvmbench.rsp.stream`: the incremental decoder of a received byte stream
- :mod:`~kvmbench.rsp.replies`: ``OK``, ``E NN``, the empty reply
- :mod:`~kvmbench.rsp.features`: ``qSupported`` both ways
- :mod:`~kvmbench.rsp.xfer`: ``qXfer`` reads and their chunked replies
- :mod:`~kvmbench.rsp.stops`: stop replies (``S T W X O N w``)
- :mod:`~kvmbench.rsp.threads`: thread ids, ``H``, ``T``, ``qC``, ``qfThreadInfo``
- :mod:`~kvmbench.rsp.resume`: ``c``, ``s``, ``vCont?``, ``vCont``
- :mod:`~kvmbench.rsp.breakpoints`: ``Z``/``z``
- :mod:`~kvmbench.rsp.memory`: ``m``, ``M``, ``X``
- :mod:`~kvmbench.rsp.registers`: ``g``, ``G``, ``p``, ``P``
- :mod:`~kvmbench.rsp.layout`: register layouts (gdb's x86-64 one as data)
- :mod:`~kvmbench.rsp.target_xml`: building and reading ``target.xml``
"""
