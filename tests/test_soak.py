"""The soak of ``bench/soak.py``: its checks on hand-made outcomes, and a short run on each broker.

The short run (marked integration) is the CI variant of ``python -m bench.soak``: 1,500 records
over 40 keys while a replica is killed with SIGKILL and restarted, a second replica joins, Restate
is frozen for a few seconds (SIGSTOP, then SIGCONT; never restarted: the server is the session's)
and a replica is killed again while the backlog drains, and the second replica leaves. Nothing may
be lost, duplicated, reordered or unaccounted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.soak import (
    GOOD,
    HOSTILE_KINDS,
    DeadLetterSeen,
    Planned,
    Produced,
    SoakConfig,
    evaluate,
    plan_records,
    report,
    run_soak,
)
from tests.stack.brokers import Broker
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

HOSTILE_SHARE = 0.03
"""Share of hostile records in the CI run, drawn from every hostile kind."""
CI_HOSTILE_KINDS = HOSTILE_KINDS
"""The hostile kinds the CI run draws from (a subset, while some are not handled yet)."""

CI_FAULTS = ("kill", "join", "freeze-kill", "leave")


# -- the checks, on outcomes made by hand ------------------------------------------------------


def rec(kind: str, key: str | None, n: int | None, offset: int, partition: int = 0) -> Produced:
    planned = Planned(kind, "rec", None, None, (), partition, key, n)
    return Produced(planned, offset)


def test_a_clean_outcome_has_no_problems() -> None:
    produced = [rec(GOOD, "a", 0, 0), rec(GOOD, "b", 1, 1), rec(GOOD, "a", 2, 2)]
    v = evaluate(produced, {"a": [0, 2], "b": [1]}, [])
    assert (v.good, v.lost, v.duplicated, v.out_of_order, v.unaccounted_total) == (3, 0, 0, 0, 0)
    assert v.unknown_values == 0
    assert v.examples == []


def test_lost_duplicated_and_out_of_order_are_counted() -> None:
    produced = [rec(GOOD, "a", n, n) for n in range(5)]
    v = evaluate(produced, {"a": [0, 2, 1, 2, 4]}, [])  # 3 lost, 2 twice, 1 after 2
    assert (v.lost, v.duplicated, v.out_of_order) == (1, 1, 1)
    assert any(e.startswith("lost: a n=3") for e in v.examples)


def test_a_lost_record_behind_the_committed_offset_is_told_apart() -> None:
    produced = [rec(GOOD, "a", 0, 0), rec(GOOD, "a", 1, 1), rec(GOOD, "b", 2, 0, partition=1)]
    v = evaluate(produced, {"a": [1], "b": []}, [], committed={0: 2, 1: 0})
    assert (v.lost, v.lost_committed) == (2, 1)  # a/0 was committed past; b/2 never delivered


def test_order_is_offset_order_not_value_order() -> None:
    # the producer may write n=1 before n=0 (a retried batch): offsets decide
    produced = [rec(GOOD, "a", 1, 10), rec(GOOD, "a", 0, 11)]
    assert evaluate(produced, {"a": [1, 0]}, []).out_of_order == 0
    assert evaluate(produced, {"a": [0, 1]}, []).out_of_order == 1


def test_a_hostile_record_is_accounted_for_by_a_dead_letter_or_by_its_value() -> None:
    produced = [
        rec("not-json", "a", None, 0),
        rec("control-header", "a", 7, 1),
        rec("tombstone", "a", None, 2),
        rec("no-key-no-value", None, None, 3),
    ]
    letters = [DeadLetterSeen(0, 0, "rec", "not JSON"), DeadLetterSeen(0, 0, "rec", "not JSON")]
    v = evaluate(produced, {"a": [7]}, letters)
    assert v.applied_hostile == Counter({"control-header": 1})
    assert v.dead_lettered == Counter({"not-json": 1})
    assert v.dead_letter_repeats == 1
    assert v.unaccounted == Counter({"tombstone": 1, "no-key-no-value": 1})
    # a dead letter of another partition at the same offset does not count
    v = evaluate(produced[:1], {"a": []}, [DeadLetterSeen(1, 0, "rec", "x")])
    assert v.unaccounted_total == 1


def test_a_dead_lettered_good_record_is_lost_and_named() -> None:
    v = evaluate([rec(GOOD, "a", 0, 5)], {"a": []}, [DeadLetterSeen(0, 5, "rec", "HTTP 400")])
    assert (v.lost, v.good_dead_lettered) == (1, 1)
    assert any("HTTP 400" in e for e in v.examples)


def test_values_nobody_produced_are_reported() -> None:
    v = evaluate([rec(GOOD, "a", 0, 0)], {"a": [0, 99, {"x": 1}]}, [])
    assert v.unknown_values == 2


def test_the_plan_is_seeded_and_keeps_each_key_on_one_partition() -> None:
    config = SoakConfig(records=3000, keys=30, partitions=4, hostile_share=0.1, seed=5)
    plan = plan_records(config, "p")
    assert plan == plan_records(config, "p")
    assert plan != plan_records(SoakConfig(records=3000, keys=30, seed=6), "p")
    kinds = Counter(p.kind for p in plan)
    assert set(kinds) == {GOOD, *HOSTILE_KINDS}
    assert 200 < sum(n for k, n in kinds.items() if k != GOOD) < 400
    assert {p.route for p in plan if p.kind == "absurd-delay"} == {"delayed"}
    assert {p.route for p in plan if p.kind not in (GOOD, "absurd-delay")} == {"rec"}
    partition_of: dict[str, int] = {}
    for p in plan:
        if p.obj_key is not None:
            assert partition_of.setdefault(p.obj_key, p.partition) == p.partition
    config = SoakConfig(records=500, hostile_share=0.5, hostile_kinds=("tombstone",))
    only = plan_records(config, "p")
    assert {p.kind for p in only} == {GOOD, "tombstone"}
    clean = plan_records(SoakConfig(records=500, hostile_share=0.0), "p")
    assert {p.kind for p in clean} == {GOOD}
    assert {p.route for p in clean} == {"rec", "delayed"}


# -- the short soak on the real stack ----------------------------------------------------------


@pytest.mark.integration
async def test_short_soak_loses_duplicates_and_reorders_nothing(
    broker: Broker, restate: RestateServer, handlers: HandlerServer, tmp_path: Path
) -> None:
    config = SoakConfig(
        records=1500,
        keys=40,
        partitions=4,
        hostile_share=HOSTILE_SHARE,
        hostile_kinds=CI_HOSTILE_KINDS,
        seed=20261125,
        produce_rate=100,  # 15 s of production, so that every fault lands while records flow
        faults=CI_FAULTS,
        fault_gap=(3.0, 5.0),
        restart_restate=False,
        duration_cap=150,  # about 35 s on a quiet machine; room for a loaded one
        stall_timeout=60,
        settle_timeout=20,
        # tansu: restart a killed replica once its session (6 s) expired (SoakConfig.kill_restart)
        kill_restart=(7.0, 8.0) if broker.name == "tansu" else (0.5, 2.0),
    )
    outcome = await run_soak(broker, restate, tmp_path, config)
    text = report(outcome)
    print(text)
    assert outcome.failures == [], text
    assert outcome.fault_counts() == Counter(CI_FAULTS), text
    assert outcome.verdict.good > 1000
    if HOSTILE_SHARE:
        assert sum(outcome.verdict.hostile.values()) > 0
