"""compact_ranks: the bounded rank lists alert notifications show."""

from __future__ import annotations

import pytest

from gradwatch.collector.rank_ranges import compact_ranks, rank_runs


def test_compact_ranks_collapses_consecutive_ranks_into_ranges() -> None:
    assert compact_ranks(range(40)) == "0-39"
    assert compact_ranks([12, 0, 1, 2, 3, 7, 9, 10, 11, 3]) == "0-3,7,9-12"
    assert compact_ranks([5]) == "5"
    assert compact_ranks([]) == ""


def test_compact_ranks_caps_ranges_and_counts_the_ranks_left_out() -> None:
    evens = range(0, 1024, 2)
    text = compact_ranks(evens, max_runs=3)
    assert text == "0,2,4 +509 more"
    assert compact_ranks(evens).endswith(" +496 more")  # 16 shown of 512
    # Ranges count every rank they hold: 2 shown ranges, 2 ranges of 10 left out.
    assert compact_ranks([*range(10), *range(20, 30), *range(40, 50), 60, 61], 2) == (
        "0-9,20-29 +12 more"
    )


def test_compact_ranks_of_1024_scattered_ranks_stays_short() -> None:
    assert len(compact_ranks(range(0, 2048, 2))) < 100


def test_compact_ranks_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="max_runs"):
        compact_ranks([1], max_runs=0)


def test_rank_runs_are_sorted_inclusive_runs() -> None:
    assert rank_runs([3, 1, 2, 8]) == [(1, 3), (8, 8)]
