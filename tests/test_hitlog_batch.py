"""HitLog.record_many (an in-guest probe's drain) leaves the log exactly as
recording the same hits one by one would: totals, the ring's rows, its
wrap-around and the rows it drops."""

from __future__ import annotations

import pytest

from kvmbench.engine.hitlog import HitLog


def _hits(count: int, offset: int = 0) -> tuple[list[int], list[int], list[int], list[int]]:
    numbers = [1 + (k + offset) % 3 for k in range(count)]
    return numbers, [0x1000 + n for n in numbers], [0x2000 + k for k in range(count)], \
        [10_000 + offset + k for k in range(count)]


@pytest.mark.parametrize("batches", [[3], [5, 2], [4, 4, 4], [20], [7, 13, 1]])
def test_a_batch_records_as_its_hits_one_by_one(batches: list[int]) -> None:
    one, many = HitLog(capacity=8), HitLog(capacity=8)
    offset = 0
    for size in batches:
        numbers, pcs, callers, times = _hits(size, offset)
        for row in zip(numbers, pcs, callers, times):
            one.record(*row)
        many.record_many(numbers, pcs, callers, times)
        offset += size
        assert many.rows() == one.rows() and many.totals == one.totals
        assert many.recorded == one.recorded


def test_an_empty_batch_changes_nothing() -> None:
    log = HitLog(capacity=4)
    log.record_many([], [], [], [])
    assert log.recorded == 0 and len(log.rows()) == 0
