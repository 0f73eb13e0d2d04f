"""Typed outputs (``output=Type``): what fits, what raises DecodeError, what is refused up front.
Pure: no server."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

import pytest

from bridge.ingress import DecodeError, IngressError
from bridge.ingress._decode import check_output_type, decode_as

JSON = "application/json"


@dataclass
class Item:
    sku: str
    qty: int = 1


@dataclass
class Order:
    id: str
    items: list[Item]
    total: float
    note: str | None = None
    tags: list[str] = field(default_factory=list)


class Greeting(TypedDict):
    text: str
    lang: NotRequired[str]


class Status(enum.Enum):
    OK = "ok"
    LATE = "late"


class FakeModel:
    """Anything with ``model_validate`` is used as a pydantic model is."""

    def __init__(self, v: Any) -> None:
        self.v = v

    @classmethod
    def model_validate(cls, value: Any) -> FakeModel:
        if not isinstance(value, dict) or "v" not in value:
            raise ValueError("1 validation error: v Field required")
        return cls(value["v"])


def test_bytes_is_the_raw_body_even_for_json() -> None:
    body = b'{"b": 1,  "a": 2}'  # spacing and key order kept
    assert decode_as(body, JSON, bytes) == body
    assert decode_as(b"", JSON, bytes) == b""
    assert decode_as(b"\x00\xff", "application/octet-stream", bytes) == b"\x00\xff"


def test_default_is_decoded_json_or_bytes() -> None:
    assert decode_as(b'{"a": [1, 2]}', JSON, None) == {"a": [1, 2]}
    assert decode_as(b"", None, None) is None
    assert decode_as(b"\x00", "application/octet-stream", None) == b"\x00"


@pytest.mark.parametrize(
    ("body", "output", "expected"),
    [
        (b'"hi"', str, "hi"),
        (b"5", int, 5),
        (b"5", float, 5.0),
        (b"2.5", float, 2.5),
        (b"true", bool, True),
        (b"null", type(None), None),
        (b"", type(None), None),
        (b"[1, 2]", list[int], [1, 2]),
        (b"[1, 2]", tuple[int, ...], (1, 2)),
        (b'[1, "a"]', tuple[int, str], (1, "a")),
        (b'{"a": 1}', dict[str, int], {"a": 1}),
        (b'{"a": 1}', dict, {"a": 1}),
        (b"null", int | None, None),
        (b"3", int | None, 3),
        (b'"ok"', Status, Status.OK),
        (b'"b"', Literal["a", "b"], "b"),
        (b'{"x": [1]}', Any, {"x": [1]}),
    ],
)
def test_primitives_and_containers(body: bytes, output: Any, expected: Any) -> None:
    got = decode_as(body, JSON, output)
    assert got == expected
    assert type(got) is type(expected)


def test_dataclass_nested_with_defaults_and_unknown_keys_ignored() -> None:
    body = b'{"id": "o-1", "items": [{"sku": "a"}, {"sku": "b", "qty": 3}], "total": 7, "x": 1}'
    order = decode_as(body, JSON, Order)
    assert order == Order("o-1", [Item("a"), Item("b", 3)], 7.0)
    assert isinstance(order.items[0], Item)


def test_typeddict_checks_required_keys_and_value_types() -> None:
    assert decode_as(b'{"text": "hi"}', JSON, Greeting) == {"text": "hi"}
    assert decode_as(b'{"text": "hi", "lang": "en"}', JSON, Greeting)["lang"] == "en"
    with pytest.raises(DecodeError, match=r"Greeting needs 'text'"):
        decode_as(b'{"lang": "en"}', JSON, Greeting)
    with pytest.raises(DecodeError, match=r"\$\.lang: expected a string, got integer 5"):
        decode_as(b'{"text": "hi", "lang": 5}', JSON, Greeting)


def test_model_validate_is_used_and_its_errors_become_decode_errors() -> None:
    assert decode_as(b'{"v": 3}', JSON, FakeModel).v == 3
    with pytest.raises(DecodeError, match="Field required"):
        decode_as(b"{}", JSON, FakeModel)


def test_pydantic_model_when_pydantic_is_importable() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Receipt(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        tx: str
        amount: int

    got = decode_as(b'{"tx": "t1", "amount": 5}', JSON, Receipt)
    assert (got.tx, got.amount) == ("t1", 5)
    with pytest.raises(DecodeError):
        decode_as(b'{"tx": "t1"}', JSON, Receipt)


@pytest.mark.parametrize(
    ("body", "output", "message"),
    [
        (b'"5"', int, r"\$: expected an integer, got string \"5\""),
        (b"true", int, "expected an integer, got boolean true"),
        (b"1", bool, "expected a boolean"),
        (b"1.5", int, "expected an integer, got number 1.5"),
        (b"null", str, "expected a string, got null"),
        (b"", str, "expected a string, got null"),
        (b"[1, 2, 3]", tuple[int, str], "expected 2 items, got 3"),
        (b'[1, "x"]', list[int], r"\$\[1\]: expected an integer"),
        (b'"meh"', Status, r"expected one of \['ok', 'late'\]"),
        (b'"c"', Literal["a", "b"], "expected one of"),
        (b'{"id": "o", "total": 1}', Order, "Order needs 'items'"),
        (b'{"id": "o", "items": [{"qty": 1}], "total": 1}', Order, "Item needs 'sku'"),
        (b'{"id": 1, "items": [], "total": 1}', Order, r"\$\.id: expected a string"),
        (b"[]", Order, "expected an object for Order, got array"),
        (b'"x"', int | None, "fits none of"),
        (b"{not json", dict, "unexpected character|expected"),
    ],
)
def test_mismatches_are_decode_errors(body: bytes, output: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        decode_as(body, JSON, output, invocation_id="inv_1")
    err = info.value
    assert isinstance(err, IngressError)
    assert not err.retryable
    assert err.reason == "decode"
    assert err.body == body
    assert err.invocation_id == "inv_1"


def test_invalid_json_without_output_type_is_a_decode_error_too() -> None:
    with pytest.raises(DecodeError, match="cannot decode the answer"):
        decode_as(b"{not json", JSON, None)


def test_a_non_json_body_fits_only_bytes_and_text() -> None:
    assert decode_as("ünï".encode(), "text/plain", str) == "ünï"
    with pytest.raises(DecodeError, match="the answer is text/plain, not JSON"):
        decode_as(b"5", "text/plain", int)
    with pytest.raises(DecodeError):
        decode_as(b"\xff", "text/plain", str)


@pytest.mark.parametrize("output", [set[int], complex, "Order", 5])
def test_types_the_decoder_cannot_build_are_refused_before_sending(output: Any) -> None:
    with pytest.raises(TypeError, match="not a type the ingress client can decode into"):
        check_output_type(output)


@pytest.mark.parametrize(
    "output",
    [
        None,
        bytes,
        str,
        int,
        float,
        bool,
        type(None),
        list[Order],
        dict[str, Item],
        Order,
        Greeting,
        Status,
        FakeModel,
        Any,
        int | None,
        Literal["a"],
        tuple[int, ...],
    ],
)
def test_supported_types_pass_the_check(output: Any) -> None:
    check_output_type(output)


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


def test_recursive_dataclasses() -> None:
    check_output_type(Node)
    tree = decode_as(b'{"name": "a", "children": [{"name": "b"}]}', JSON, Node)
    assert tree == Node("a", [Node("b")])
