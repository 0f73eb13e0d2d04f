"""Routes judged against what Restate has registered (``bridge.core.deployments``), pure.

``tests/data/restate-1.7.12-services.json`` is ``GET /services`` of Restate 1.7.12 with the test
handlers registered (trimmed to the fields read), so the reader is tested on a real answer."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.core.deployments import (
    ServicesError,
    dedup_window,
    describe,
    read_services,
    retention,
    route_problems,
)

LISTING = json.loads((Path(__file__).parent / "data" / "restate-1.7.12-services.json").read_text())
SERVICES = read_services(LISTING)


def test_a_real_answer_is_read() -> None:
    assert {"Forgetful", "Greeter", "Signup", "Recorder"} <= set(SERVICES)
    greeter, signup = SERVICES["Greeter"], SERVICES["Signup"]
    assert greeter.kind == "Service"
    assert signup.kind == "Workflow"
    assert greeter.handlers["greet"].public
    assert not greeter.handlers["internal"].public
    assert greeter.handlers["greet"].input_schema == {"type": "string"}
    assert signup.handlers["run"].kind == "Workflow"
    assert SERVICES["Forgetful"].idempotency_retention == timedelta(hours=1)
    assert signup.workflow_retention == timedelta(days=1)


@pytest.mark.parametrize(
    ("target", "service", "handler", "expected"),
    [
        ("service", "Greeter", "greet", []),
        ("object", "Recorder", "record", []),
        ("workflow", "Signup", "run", []),
        ("workflow", "Signup", "approve", []),
        (
            "service",
            "Greter",
            "greet",
            [
                "route 'r': service 'Greter' is not registered (did you mean 'Greeter'?); "
                "registered: Forgetful, Greeter, Recorder, Signup"
            ],
        ),
        (
            "service",
            "Nothing",
            "x",
            [
                "route 'r': service 'Nothing' is not registered; "
                "registered: Forgetful, Greeter, Recorder, Signup"
            ],
        ),
        (
            "object",
            "Greeter",
            "greet",
            [
                "route 'r': target = \"object\" needs a VirtualObject, but 'Greeter' is a Service: "
                'write target = "service"'
            ],
        ),
        (
            "service",
            "Signup",
            "run",
            [
                "route 'r': target = \"service\" needs a Service, but 'Signup' is a Workflow: "
                'write target = "workflow"'
            ],
        ),
        (
            "workflow",
            "Recorder",
            "record",
            [
                "route 'r': target = \"workflow\" needs a Workflow, but 'Recorder' is a "
                'VirtualObject: write target = "object"'
            ],
        ),
        (
            "service",
            "Greeter",
            "gret",
            [
                "route 'r': 'Greeter' has no handler 'gret' (did you mean 'greet'?); it has: fail, "
                "greet, headers, internal, ping, rawEcho, slow"
            ],
        ),
        (
            "service",
            "Greeter",
            "internal",
            [
                "route 'r': Greeter/internal is not public: the ingress refuses it "
                "(make it public, or route to a public handler)"
            ],
        ),
    ],
)
def test_route_problems(target: str, service: str, handler: str, expected: list[str]) -> None:
    assert route_problems("r", target, service, handler, SERVICES) == expected


def test_a_wrong_kind_and_a_missing_handler_are_both_said() -> None:
    problems = route_problems("r", "object", "Greeter", "nope", SERVICES)
    assert [p.split(":")[1].strip()[:6] for p in problems] == ["target", "'Greet"]


def test_a_private_service_makes_every_handler_private() -> None:
    listing = {
        "services": [{"name": "S", "ty": "Service", "public": False, "handlers": [{"name": "h"}]}]
    }
    assert route_problems("r", "service", "S", "h", read_services(listing)) == [
        "route 'r': service 'S' is not public: the ingress refuses it (make it public, or route "
        "to a public handler)"
    ]


def test_no_services_at_all() -> None:
    assert route_problems("r", "service", "S", "h", {}) == [
        "route 'r': service 'S' is not registered; registered: none"
    ]


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {},
        {"services": {}},
        {"services": [1]},
        {"services": [{"name": "S"}]},
        {"services": [{"name": 1, "ty": "Service", "handlers": []}]},
        {"services": [{"name": "S", "ty": "Service", "handlers": [{}]}]},
        {"services": [{"name": "S", "ty": "Service", "handlers": ["h"]}]},
    ],
)
def test_an_answer_of_another_shape_is_refused_with_a_message(doc: Any) -> None:
    with pytest.raises(ServicesError):
        read_services(doc)


def test_unknown_fields_and_unreadable_retentions_are_ignored() -> None:
    listing = {
        "services": [
            {
                "name": "S",
                "ty": "Service",
                "handlers": [{"name": "h", "ty": 7, "new_field": {}}],
                "idempotency_retention": "soon",
                "workflow_completion_retention": 5,
                "something_new": True,
            }
        ]
    }
    found = read_services(listing)["S"]
    assert found.idempotency_retention is None
    assert found.workflow_retention is None
    assert found.handlers["h"].kind is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d", timedelta(days=1)),
        ("1h", timedelta(hours=1)),
        ("1h 30m", timedelta(minutes=90)),
        ("1day 12h", timedelta(hours=36)),
        ("2days", timedelta(days=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1w", timedelta(weeks=1)),
        ("PT24H", timedelta(hours=24)),
        ("P1D", timedelta(days=1)),
        ("0s", timedelta(0)),
        ("1.5h", timedelta(minutes=90)),
        ("", None),
        ("   ", None),
        ("1", None),
        ("1 fortnight", None),
        ("1d and more", None),
        ("P", None),
        ("9" * 400 + "d", None),
        (None, None),
        (86400, None),
    ],
)
def test_retention(text: Any, expected: timedelta | None) -> None:
    assert retention(text) == expected


def test_dedup_window() -> None:
    assert dedup_window("Greeter", "greet", SERVICES) == timedelta(days=1)
    assert dedup_window("Forgetful", "note", SERVICES) == timedelta(hours=1)
    assert dedup_window("Nothing", "x", SERVICES) is None
    listing = {
        "services": [
            {
                "name": "W",
                "ty": "Workflow",
                "handlers": [{"name": "run", "ty": "Workflow"}, {"name": "peek", "ty": "Shared"}],
                "idempotency_retention": "1h",
                "workflow_completion_retention": "3d",
            },
            {"name": "U", "ty": "Service", "handlers": [{"name": "h"}]},
        ]
    }
    services = read_services(listing)
    # a workflow's run: its id stays taken for the completion retention, the longer of the two
    assert dedup_window("W", "run", services) == timedelta(days=3)
    assert dedup_window("W", "peek", services) == timedelta(hours=1)
    assert dedup_window("U", "h", services) is None


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(days=1), "1d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(milliseconds=1500), "1.5s"),
        (timedelta(days=7), "7d"),
    ],
)
def test_describe(span: timedelta, text: str) -> None:
    assert describe(span) == text
