"""bridge.core.offsets: the contiguous watermark of finished records, per partition."""

from __future__ import annotations

import random

import pytest

from bridge.core.offsets import OffsetTracker, PartitionOffsets, TopicPartition

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)
C = TopicPartition("u", 0)


def partition(*offsets: int) -> PartitionOffsets:
    part = PartitionOffsets()
    for offset in offsets:
        part.add(offset)
    return part


def test_new_partition_has_nothing_to_commit() -> None:
    part = PartitionOffsets()
    assert part.committable is None
    assert part.committed is None
    assert part.in_progress == 0
    assert part.lowest_unfinished is None


def test_in_order_completion() -> None:
    part = partition(0, 1, 2)
    assert part.in_progress == 3
    assert part.lowest_unfinished == 0
    part.finish(0)
    assert (part.committable, part.in_progress, part.lowest_unfinished) == (1, 2, 1)
    part.finish(1)
    assert (part.committable, part.in_progress, part.lowest_unfinished) == (2, 1, 2)
    part.finish(2)
    assert (part.committable, part.in_progress, part.lowest_unfinished) == (3, 0, None)


def test_out_of_order_completion_waits_for_the_prefix() -> None:
    part = partition(0, 1, 2, 3)
    part.finish(2)
    assert part.committable is None
    assert part.in_progress == 3
    part.finish(1)
    assert part.committable is None
    assert part.in_progress == 2
    part.finish(0)
    assert part.committable == 3  # 0, 1, 2 all finished
    assert part.in_progress == 1
    assert part.lowest_unfinished == 3
    part.finish(3)
    assert part.committable == 4
    assert part.in_progress == 0


def test_gaps_in_offsets() -> None:
    part = partition(10, 13, 20)
    part.finish(13)
    assert part.committable is None
    part.finish(10)
    assert part.committable == 14  # past 13, not 11: compacted offsets in between are gone
    assert part.lowest_unfinished == 20
    part.finish(20)
    assert part.committable == 21


def test_adding_after_finishing_continues_the_watermark() -> None:
    part = partition(5)
    part.finish(5)
    part.add(9)
    assert part.committable == 6
    part.finish(9)
    assert part.committable == 10


@pytest.mark.parametrize(
    ("before", "finished", "lower"),
    [
        ((5, 6), (), 6),  # equal to the last fetched
        ((5, 6), (), 3),  # below the last fetched
        ((5, 6), (5, 6), 6),  # below the watermark (7) with nothing pending
        ((5,), (5,), 4),
    ],
)
def test_adding_a_lower_offset_raises(
    before: tuple[int, ...], finished: tuple[int, ...], lower: int
) -> None:
    part = partition(*before)
    for offset in finished:
        part.finish(offset)
    with pytest.raises(ValueError, match=rf"^offset {lower} "):
        part.add(lower)


def test_tracker_to_commit_returns_only_changed_positions() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.add(A, offset)
    tracker.add(B, 100)
    assert tracker.in_progress == 4
    assert tracker.to_commit() == {}
    tracker.finish(A, 0)
    tracker.finish(B, 100)
    assert tracker.to_commit() == {A: 1, B: 101}
    assert tracker.to_commit(only={B}) == {B: 101}
    assert tracker.to_commit(only={C}) == {}
    tracker.committed({A: 1, B: 101})
    assert tracker.to_commit() == {}
    assert tracker.partition(A) is not None
    assert tracker.partition(A).committed == 1  # type: ignore[union-attr]
    tracker.finish(A, 2)  # out of order: nothing new
    assert tracker.to_commit() == {}
    tracker.finish(A, 1)
    assert tracker.to_commit() == {A: 3}
    assert tracker.in_progress == 0


def test_committed_with_an_older_position_keeps_it_pending() -> None:
    tracker = OffsetTracker()
    tracker.add(A, 0)
    tracker.add(A, 1)
    tracker.finish(A, 0)
    snapshot = tracker.to_commit()
    tracker.finish(A, 1)  # moves on while the commit of the snapshot is under way
    tracker.committed(snapshot)
    assert tracker.to_commit() == {A: 2}


def test_committed_ignores_unknown_partitions() -> None:
    tracker = OffsetTracker()
    tracker.committed({C: 5})
    assert tracker.partitions == {}


def test_forget_revoked_partitions() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.add(A, offset)
    tracker.add(B, 7)
    tracker.finish(A, 1)
    assert tracker.in_progress == 3
    assert tracker.in_progress_of({A}) == 2
    assert tracker.in_progress_of({A, B}) == 3
    tracker.forget({A, C})  # C was never seen
    assert tracker.in_progress == 1
    assert tracker.partition(A) is None
    assert set(tracker.partitions) == {B}
    tracker.finish(A, 0)  # a late completion for a revoked partition is ignored
    tracker.finish(A, 2)
    assert tracker.in_progress == 1
    assert tracker.partition(A) is None
    assert tracker.to_commit() == {}
    tracker.finish(B, 7)
    assert tracker.to_commit() == {B: 8}
    assert tracker.in_progress == 0


def test_reassigned_partition_starts_fresh() -> None:
    tracker = OffsetTracker()
    tracker.add(A, 0)
    tracker.finish(A, 0)
    tracker.forget({A})
    tracker.add(A, 50)
    assert tracker.to_commit() == {}
    tracker.finish(A, 50)
    assert tracker.to_commit() == {A: 51}


def _oracle(offsets: list[int], done: set[int]) -> int | None:
    """Brute force: one past the longest finished prefix of the fetched offsets."""
    position = None
    for offset in offsets:
        if offset not in done:
            break
        position = offset + 1
    return position


@pytest.mark.parametrize("seed", range(40))
def test_randomized_against_a_brute_force_oracle(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        offsets: list[int] = []
        current = rng.randrange(0, 1000)
        for _ in range(rng.randrange(1, 30)):
            current += rng.choice((1, 1, 1, 2, 3, 7))  # gaps, as after compaction
            offsets.append(current)
        order = offsets[:]
        rng.shuffle(order)
        part = partition(*offsets)
        tracker = OffsetTracker()
        for offset in offsets:
            tracker.add(C, offset, fetched_at=float(offset))
        done: set[int] = set()
        last_committed: int | None = None
        for count, offset in enumerate(order, start=1):
            part.finish(offset)
            tracker.finish(C, offset)
            done.add(offset)
            expected = _oracle(offsets, done)
            unfinished = [o for o in offsets if o not in done]
            assert part.committable == expected, (offsets, order[:count])
            if unfinished:
                # never past the smallest unfinished offset: nothing unfinished is skipped
                assert expected is None or expected <= unfinished[0]
                if expected is not None:
                    # and nothing fetched lies between the watermark and that offset
                    assert not [o for o in offsets if expected <= o < unfinished[0]]
            else:
                assert expected == offsets[-1] + 1
            assert part.lowest_unfinished == (unfinished[0] if unfinished else None)
            assert part.in_progress == len(offsets) - count
            committed_prefix = [o for o in offsets if expected is not None and o < expected]
            assert part.uncommittable == len(offsets) - len(committed_prefix)
            assert tracker.uncommittable(C) == part.uncommittable
            # fetched at time == offset: the oldest unfinished is the smallest unfinished offset
            assert tracker.oldest_unfinished_age(C, 10_000.0) == (
                10_000.0 - unfinished[0] if unfinished else 0.0
            )
            assert tracker.in_progress == len(offsets) - count
            commit = tracker.to_commit()
            moved = expected is not None and expected != last_committed
            assert commit == ({C: expected} if moved else {})
            if rng.random() < 0.5:
                tracker.committed(commit)
                last_committed = commit.get(C, last_committed)
        assert part.committable == offsets[-1] + 1
        assert part.in_progress == 0


def test_a_late_finish_from_a_previous_assignment_is_ignored() -> None:
    tp = TopicPartition("t", 0)
    tracker = OffsetTracker()
    old_owner = tracker.add(tp, 5)
    tracker.forget({tp})  # revoked while offset 5 was still being sent
    new_owner = tracker.add(tp, 5)  # assigned again: offset 5 is fetched anew
    tracker.finish(tp, 5, old_owner)  # the old send finishes late
    assert tracker.in_progress == 1
    assert tracker.to_commit() == {}
    tracker.finish(tp, 5, new_owner)
    assert tracker.in_progress == 0
    assert tracker.to_commit() == {tp: 6}


def test_uncommittable_counts_finished_records_behind_the_oldest_unfinished() -> None:
    part = partition(0, 1, 2, 3)
    assert part.uncommittable == 4
    part.finish(1)
    part.finish(2)
    part.finish(3)
    assert (part.in_progress, part.uncommittable) == (1, 4)  # 1..3 wait behind 0
    part.finish(0)
    assert (part.in_progress, part.uncommittable) == (0, 0)


def test_full_names_the_partitions_at_the_bound() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.add(A, offset)
    for offset in range(3):
        tracker.add(B, offset)
    for offset in range(1, 5):
        tracker.finish(A, offset)  # finished, but stuck behind offset 0
    assert tracker.uncommittable(A) == 5
    assert tracker.uncommittable(C) == 0
    assert tracker.full(5) == {A}
    assert tracker.full(3) == {A, B}
    assert tracker.full(6) == set()
    tracker.finish(A, 0)
    assert tracker.full(3) == {B}


def test_oldest_unfinished_age_follows_the_head() -> None:
    tracker = OffsetTracker()
    assert tracker.oldest_unfinished_age(A, 100.0) == 0.0  # never seen
    tracker.add(A, 0, fetched_at=10.0)
    tracker.add(A, 1, fetched_at=20.0)
    tracker.add(A, 2, fetched_at=30.0)
    assert tracker.oldest_unfinished_age(A, 100.0) == 90.0
    tracker.finish(A, 1)  # not the head: the oldest unfinished is still offset 0
    assert tracker.oldest_unfinished_age(A, 100.0) == 90.0
    tracker.finish(A, 0)  # 0 and 1 pass; 2 (fetched at 30) is the oldest now
    assert tracker.oldest_unfinished_age(A, 100.0) == 70.0
    assert tracker.oldest_unfinished_age(A, 25.0) == 0.0  # a clock behind: never negative
    tracker.finish(A, 2)
    assert tracker.oldest_unfinished_age(A, 100.0) == 0.0


def test_first_fetched_is_where_the_assignment_started() -> None:
    part = partition(42, 43)
    part.finish(42)
    part.add(50)
    assert part.first_fetched == 42
    assert PartitionOffsets().first_fetched is None


def test_restart_after_offsets_went_backwards() -> None:
    tracker = OffsetTracker()
    owner = tracker.add(A, 10)
    tracker.add(A, 11)
    tracker.add(B, 0)
    tracker.finish(A, 10)
    tracker.committed(tracker.to_commit())
    with pytest.raises(ValueError, match=r"^offset 5 fetched after 11"):
        tracker.add(A, 5)  # the log was truncated, or the group's offset was reset
    assert tracker.restart(A) == 1  # offset 11 was unfinished
    assert tracker.in_progress == 1  # B's record
    fresh = tracker.add(A, 5)
    assert fresh is not owner
    tracker.finish(A, 11, owner)  # the old assignment's late finish is ignored
    assert tracker.to_commit() == {}
    tracker.finish(A, 5, fresh)
    assert tracker.to_commit() == {A: 6}  # a commit that moves back, as the reset asked
    assert tracker.restart(C) == 0


def test_an_idle_partition_follows_the_consumers_position_and_a_busy_one_does_not() -> None:
    tracker = OffsetTracker()
    tp = TopicPartition("t", 0)
    assert not tracker.passed(tp, 9), "nothing fetched: nothing to follow"
    owner = tracker.add(tp, 3)
    assert not tracker.passed(tp, 9), "3 is unfinished"
    tracker.finish(tp, 3, owner)
    assert tracker.to_commit() == {tp: 4}
    assert tracker.passed(tp, 9)
    assert tracker.to_commit() == {tp: 9}
    assert not tracker.passed(tp, 7), "never backwards"
    tracker.committed({tp: 9})
    tracker.add(tp, 9)
    assert not tracker.passed(tp, 12)
