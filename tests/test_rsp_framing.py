"""Framing per the GDB manual's "Overview": checksums, escapes, run-length
encoding, and the manual's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmbench.errors import RspError
from kvmbench.rsp.framing import (
    checksum,
    decode_payload,
    encode_notification,
    encode_packet,
    escape,
    parse_checksum,
    rle_encode,
    unescape,
)


def test_checksum_is_the_byte_sum_modulo_256() -> None:
    assert checksum(b"OK") == 0x9A
    assert checksum(b"") == 0
    assert checksum(b"\xff\x02") == 0x01


def test_encode_packet_frames_data_with_its_checksum() -> None:
    assert encode_packet(b"OK") == b"$OK#9a"
    assert encode_packet(b"") == b"$#00"


def test_the_four_special_bytes_are_escaped_xor_0x20() -> None:
    assert escape(b"a$b#c}d*e") == b"a}\x04b}\x03c}]d}\x0ae"
    assert unescape(b"a}\x04b}\x03c}]d}\x0ae") == b"a$b#c}d*e"


def test_escaped_packet_checksum_covers_the_escaped_bytes() -> None:
    framed = encode_packet(b"#")
    assert framed == b"$}\x03#%02x" % checksum(b"}\x03")


def test_unescape_refuses_a_trailing_escape() -> None:
    with pytest.raises(RspError, match="escape"):
        unescape(b"ab}")


def test_manual_rle_examples_decode() -> None:
    # GDB manual: "0* " is four zeros (a space is a repeat count of 3).
    assert decode_payload(b"0* ") == b"0000"
    assert decode_payload(b"0*!") == b"00000"
    assert decode_payload(b"0*\"0") == b"0000000"


def test_rle_repeats_the_byte_an_escape_produced() -> None:
    assert decode_payload(b"}]* ") == b"}}}}"


@pytest.mark.parametrize("raw, message", [
    (b"*a", "nothing to repeat"),
    (b"a*", "without a count"),
    (b"a*\x01", "printable"),
    (b"a}", "escape"),
])  # fmt: skip
def test_decode_payload_refuses_broken_repeats_and_escapes(raw: bytes, message: str) -> None:
    with pytest.raises(RspError, match=message):
        decode_payload(raw)


def test_rle_encode_shortens_runs_and_never_uses_forbidden_counts() -> None:
    for n in range(1, 300):
        encoded = rle_encode(b"0" * n)
        assert decode_payload(encoded) == b"0" * n
        counts = encoded[2::3] if b"*" in encoded else b""
        assert not set(counts) & set(b"#$}*+-")
    assert len(rle_encode(b"0" * 100)) < 10


def test_rle_leaves_escape_pairs_alone() -> None:
    data = escape(b"}" * 10)
    assert rle_encode(data) == data


def test_rle_packets_decode_to_their_data() -> None:
    framed = encode_packet(b"00000000" * 8 + b"ff", rle=True)
    assert framed.startswith(b"$0*") and decode_payload(framed[1:-3]) == b"00000000" * 8 + b"ff"


def test_notification_uses_percent() -> None:
    assert encode_notification(b"Stop:T05") == b"%Stop:T05#" + b"%02x" % checksum(b"Stop:T05")


def test_parse_checksum_takes_two_hex_digits_only() -> None:
    assert parse_checksum(b"9A") == 0x9A
    for bad in (b"9", b"zz", b"9a0"):
        with pytest.raises(RspError, match="two hex digits"):
            parse_checksum(bad)


@given(st.binary(max_size=300), st.booleans())
def test_any_data_survives_encode_and_decode(data: bytes, rle: bool) -> None:
    framed = encode_packet(data, rle=rle)
    body = framed[1:-3]
    assert b"$" not in body and b"#" not in body
    assert int(framed[-2:], 16) == checksum(body)
    assert decode_payload(body) == data
