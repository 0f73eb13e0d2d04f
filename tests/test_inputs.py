"""``validate_input``: a body checked against a handler's input schema, its problem named by JSON
path and rule; and the route's records refused, counted and dead-lettered by the Kafka side."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bridge.core.inputs import BadInputSchema, InputCheck, checkable, json_path
from bridge.core.routing import Invocation, Poison
from tests.test_record_age import TP, Side
from tests.test_worker import FakeConsumer

PAYMENT = {
    "type": "object",
    "properties": {
        "amount": {"type": "integer", "minimum": 0},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
        "odd key": {"type": "string"},
    },
    "required": ["amount"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"amount": 5}', None),
        (b'{"amount": 5, "items": [{"sku": "a"}]}', None),
        (b'{"amount": "abc"}', "$.amount: 'abc' is not of type 'integer'"),
        (b'{"amount": -1}', "$.amount: -1 is less than the minimum of 0"),
        (b"{}", "$: 'amount' is a required property"),
        (b'{"amount": 1, "items": [{"sku": 1}, {}]}', "$.items[1]: 'sku' is a required property"),
        (b'{"amount": 1, "odd key": 2}', "$['odd key']: 2 is not of type 'string'"),
        (
            b'{"amount": 1, "extra": true}',
            "$: Additional properties are not allowed ('extra' was unexpected)",
        ),
        (b"[1]", "$: [1] is not of type 'object'"),
        (None, "$: None is not of type 'object'"),
    ],
)
def test_a_body_against_a_schema(body: bytes | None, problem: str | None) -> None:
    assert InputCheck(PAYMENT).problem(body) == problem


def test_a_body_that_is_not_json() -> None:
    problem = InputCheck(PAYMENT).problem(b"not json")
    assert problem is not None
    assert problem.startswith("$: not JSON (")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [(True, False), ({}, False), (None, False), (False, True), ({"type": "string"}, True)],
)
def test_which_schemas_constrain_anything(schema: Any, expected: bool) -> None:
    assert checkable(schema) is expected


def test_a_schema_that_is_no_json_schema_is_refused() -> None:
    with pytest.raises(BadInputSchema):
        InputCheck({"type": "no-such-type"})


def test_json_path() -> None:
    assert json_path([]) == "$"
    assert json_path(["a", 0, "b c", "x-y", 2]) == "$.a[0]['b c']['x-y'][2]"


class Checks:
    """The registry's view for the Kafka side: one route's input schema."""

    def __init__(self, schema: Any) -> None:
        self.check = InputCheck(schema)

    def dedup_window(self, route: str) -> float | None:
        return None

    def input_check(self, route: str) -> InputCheck | None:
        return self.check


def test_a_refused_input_is_dead_lettered_with_its_path_and_counted() -> None:
    side = Side(registry=Checks({"type": "object", "required": ["n"]}))
    side.intake.take(FakeConsumer(), TP, [record(0, b'{"n": 1}'), record(1, b"{}")])
    [(_, good), (_, bad)] = side.delivery.jobs
    assert isinstance(good, Invocation)
    assert bad == Poison(
        "rec", "input refused by Recorder/record's schema: $: 'n' is a required property"
    )
    refused = side.metrics.registry.get_sample_value(
        "restate_bridge_inputs_refused_total", {"route": "rec"}
    )
    assert refused == 1


def record(offset: int, value: bytes) -> Any:
    return SimpleNamespace(
        topic="orders", partition=0, offset=offset, timestamp=-1, key=b"k", value=value, headers=()
    )
