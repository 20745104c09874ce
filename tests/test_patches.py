"""The software-trap patch table against a plain bytearray memory: reads
never show trap bytes, writes over traps become new originals, removal and
detach restore exactly what the guest last wrote."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmbench.engine.patches import PatchTable

SIZE = 64
HLT, INT3 = 0xF4, 0xCC


class Ram:
    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.data[address : address + length])

    def write(self, address: int, data: bytes) -> None:
        self.data[address : address + len(data)] = data


def test_insert_hides_the_trap_and_remove_restores() -> None:
    ram = Ram(bytes(range(SIZE)))
    table = PatchTable(ram)
    table.insert(5, HLT)
    assert ram.data[5] == HLT
    assert table.read(0, SIZE) == bytes(range(SIZE))
    table.remove(5)
    assert ram.data == bytes(range(SIZE))


def test_shared_trap_stays_until_its_last_user_goes() -> None:
    ram = Ram(bytes(SIZE))
    table = PatchTable(ram)
    table.insert(3, INT3)
    table.insert(3, INT3)
    table.remove(3)
    assert ram.data[3] == INT3
    table.remove(3)
    assert ram.data[3] == 0


def test_write_over_a_trap_becomes_the_new_original() -> None:
    ram = Ram(bytes(SIZE))
    table = PatchTable(ram)
    table.insert(10, HLT)
    table.write(8, b"\x01\x02\x03\x04")
    assert ram.data[10] == HLT  # still armed
    assert table.read(8, 4) == b"\x01\x02\x03\x04"
    table.remove_all()
    assert ram.read(8, 4) == b"\x01\x02\x03\x04"


def test_lift_and_rearm_adopt_what_the_stepped_instruction_wrote() -> None:
    ram = Ram(bytes(SIZE))
    table = PatchTable(ram)
    table.insert(1, HLT)
    table.lift(1)
    assert ram.data[1] == 0
    ram.write(1, b"\x77")  # the stepped instruction rewrote its own byte
    table.rearm(1)
    assert ram.data[1] == HLT
    assert table.read(1, 1) == b"\x77"


ops = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, SIZE - 1), st.sampled_from([HLT, INT3])),
    st.tuples(st.just("remove"), st.integers(0, SIZE - 1), st.just(0)),
    st.tuples(st.just("write"), st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("step"), st.integers(0, SIZE - 1), st.integers(0, 255)),
)


@settings(max_examples=200, deadline=None)
@given(initial=st.binary(min_size=SIZE, max_size=SIZE), program=st.lists(ops, max_size=40))
def test_memory_is_always_what_the_guest_wrote(initial: bytes, program: list) -> None:  # type: ignore[type-arg]
    ram = Ram(initial)
    table = PatchTable(ram)
    guest = bytearray(initial)  # what the guest (and debugger writes) put there
    users: dict[int, int] = {}
    for op, address, arg in program:
        if op == "insert":
            table.insert(address, arg)
            users[address] = users.get(address, 0) + 1
        elif op == "remove" and users.get(address):
            table.remove(address)
            users[address] -= 1
        elif op == "write":
            data = bytes(arg[: SIZE - address])
            table.write(address, data)
            guest[address : address + len(data)] = data
        elif op == "step" and address in table:
            # Step over a trap whose instruction stores to its own first byte.
            table.lift(address)
            ram.write(address, bytes([arg]))
            guest[address] = arg
            table.rearm(address)
        assert table.read(0, SIZE) == bytes(guest)
        for a in range(SIZE):
            expected_trap = users.get(a, 0) > 0
            assert (a in table) == expected_trap
    table.remove_all()
    assert bytes(ram.data) == bytes(guest)
