"""bridge.config.diff: what a reload would change, as tables; and the loader's ``running`` check
(a reload's routes run with the running tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import BridgeConfig, ConfigError, parse_config
from bridge.config.diff import ConfigDiff, diff, subscription

PATH = Path("routes.toml")
BASE = """
[kafka]
bootstrap_servers = "b:9092"
group_id = "g"
[restate]
ingress_url = "http://restate:8080"
[metrics]
listen = "127.0.0.1:9464"
[delivery]
max_in_flight = 64
"""
ORDERS = """
[[routes]]
name = "orders"
topic = "orders"
target = "object"
service = "Orders"
handler = "place"
key = "{key}"
"""
PAYMENTS = """
[[routes]]
name = "payments"
topics = ["payments", "refunds"]
target = "service"
service = "Payments"
handler = "charge"
"""


def parse(text: str, env: dict[str, str] | None = None, **kwargs: object) -> BridgeConfig:
    return parse_config(text, PATH, env or {}, **kwargs)  # type: ignore[arg-type]


OLD = BASE + ORDERS + PAYMENTS

# (what the new file is, the diff expected against OLD)
CASES: list[tuple[str, str, ConfigDiff]] = [
    ("the same file", OLD, ConfigDiff()),
    ("the routes in another order", BASE + PAYMENTS + ORDERS, ConfigDiff()),
    (
        "blank lines and comments moved a route",
        BASE + "\n# hi\n\n" + ORDERS + PAYMENTS,
        ConfigDiff(),
    ),
    (
        "a route's handler changed",
        OLD.replace('"place"', '"placeV2"'),
        ConfigDiff(changed=(("orders", ("handler",)),)),
    ),
    (
        "a route's key and ordering changed",
        OLD.replace('key = "{key}"', 'key = "{value.id}"\nordering = "partition"'),
        ConfigDiff(changed=(("orders", ("key", "ordering")),)),
    ),
    (
        "a route's max_in_flight changed",
        BASE + ORDERS.replace('key = "{key}"', 'key = "{key}"\nmax_in_flight = 4') + PAYMENTS,
        ConfigDiff(changed=(("orders", ("max_in_flight",)),)),
    ),
    (
        "a route's idempotency_key changed",
        BASE + ORDERS + 'idempotency_key = "{key}-{offset}"\n' + PAYMENTS,
        ConfigDiff(changed=(("orders", ("idempotency_key",)),)),
    ),
    (
        "a route added on a new topic",
        OLD + ORDERS.replace('"orders"', '"audit"'),
        ConfigDiff(added=("audit",), topics_added=("audit",), subscription_changed=True),
    ),
    (
        "a route removed, its topics with it",
        BASE + ORDERS,
        ConfigDiff(
            removed=("payments",),
            topics_removed=("payments", "refunds"),
            subscription_changed=True,
        ),
    ),
    (
        "a route renamed: removed and added, same topics",
        BASE + ORDERS.replace('name = "orders"', 'name = "orders-v2"') + PAYMENTS,
        ConfigDiff(added=("orders-v2",), removed=("orders",)),
    ),
    (
        "one topic of a route dropped",
        BASE + ORDERS + PAYMENTS.replace(', "refunds"', ""),
        ConfigDiff(
            changed=(("payments", ("topics",)),),
            topics_removed=("refunds",),
            subscription_changed=True,
        ),
    ),
    (
        "a literal topic became a pattern",
        BASE + ORDERS.replace('topic = "orders"', 'topic_pattern = "orders(-.+)?"') + PAYMENTS,
        ConfigDiff(
            changed=(("orders", ("topics", "topic_pattern")),),
            topics_removed=("orders",),
            subscription_changed=True,
        ),
    ),
    (
        "[kafka] group_id and [delivery] changed with a route",
        OLD.replace('group_id = "g"', 'group_id = "h"')
        .replace("max_in_flight = 64", "max_in_flight = 65\nretry_max = '5s'")
        .replace('"place"', '"placeV2"'),
        ConfigDiff(
            changed=(("orders", ("handler",)),),
            restart_required=(
                ("kafka", ("group_id",)),
                ("delivery", ("max_in_flight", "retry_max")),
            ),
        ),
    ),
    (
        "[metrics] listen and [restate] ingress_url changed",
        OLD.replace("9464", "9465").replace("restate:8080", "restate:8081"),
        ConfigDiff(restart_required=(("restate", ("ingress_url",)), ("metrics", ("listen",)))),
    ),
    (
        "[dead_letter] added",
        OLD + '\n[dead_letter]\ntopic = "dlq"\n',
        ConfigDiff(restart_required=(("dead_letter", ("topic",)),)),
    ),
    (
        "a second ingress node",
        OLD.replace('"http://restate:8080"', '["http://restate:8080", "http://restate-2:8080"]'),
        ConfigDiff(restart_required=(("restate", ("ingress_url",)),)),
    ),
    (
        "[tracing] with its default",
        OLD + "\n[tracing]\nspans = false\n",
        ConfigDiff(),
    ),
    (
        "[tracing] spans on",
        OLD + "\n[tracing]\nspans = true\n",
        ConfigDiff(restart_required=(("tracing", ("spans",)),)),
    ),
]


@pytest.mark.parametrize(("new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diff(new: str, expected: ConfigDiff) -> None:
    assert diff(parse(OLD), parse(new)) == expected


def test_a_pattern_route_subscribes_by_one_pattern_and_its_change_resubscribes() -> None:
    old = parse(BASE + ORDERS.replace('topic = "orders"', 'topic_pattern = "orders-.+"'))
    new = parse(BASE + ORDERS.replace('topic = "orders"', 'topic_pattern = "orders-[a-z]+"'))
    assert subscription(old) == ("^(?:(?:orders-.+))$", ())
    changes = diff(old, new)
    assert changes.subscription_changed
    assert changes.changed == (("orders", ("topic_pattern",)),)
    assert (changes.topics_added, changes.topics_removed) == ((), ())


@pytest.mark.parametrize(
    ("keys", "retargeted"),
    [
        (("handler",), True),
        (("service",), True),
        (("target", "key"), True),
        (("idempotency_key",), True),
        (("max_in_flight",), False),
        (("match", "headers", "ordering", "body"), False),
    ],
)
def test_retargeted_routes_are_the_ones_whose_idempotency_scope_moves(
    keys: tuple[str, ...], retargeted: bool
) -> None:
    changes = ConfigDiff(changed=(("r", keys),))
    assert changes.retargeted == (("r",) if retargeted else ())


def test_stale_routes_are_the_removed_and_changed_ones() -> None:
    changes = ConfigDiff(added=("a",), removed=("b",), changed=(("c", ("handler",)),))
    assert changes.stale_routes == {"b", "c"}


def test_as_json_is_the_changes_answer() -> None:
    changes = diff(
        parse(OLD),
        parse(OLD.replace('"place"', '"placeV2"') + ORDERS.replace('"orders"', '"audit"')),
    )
    assert changes.as_json() == {
        "added": ["audit"],
        "removed": [],
        "changed": {"orders": ["handler"]},
        "topics_added": ["audit"],
        "topics_removed": [],
        "resubscribed": True,
    }


def test_a_secret_that_changed_is_named_by_key_never_by_value() -> None:
    text = OLD.replace("[metrics]\n", '[metrics]\ntoken_env = "LISTENER_TOKEN"\n')
    old = parse(text, {"LISTENER_TOKEN": "first-secret-value"})
    new = parse(text, {"LISTENER_TOKEN": "second-secret-value"})
    changes = diff(old, new)
    assert changes.restart_required == (("metrics", ("token",)),)
    assert "secret-value" not in repr(changes) + repr(changes.as_json())


def test_a_rotated_ingress_token_file_is_no_change_the_bridge_reads_it_itself(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    text = OLD.replace("[restate]\n", f'[restate]\ntoken_file = "{token}"\n')
    token.write_text("one\n")
    old = parse(text)
    token.write_text("two\n")
    assert diff(old, parse(text)) == ConfigDiff()
    # a token from the environment is read at start only: a restart applies it
    env_text = OLD.replace("[restate]\n", '[restate]\ntoken_env = "T"\n')
    changes = diff(parse(env_text, {"T": "one"}), parse(env_text, {"T": "two"}))
    assert changes.restart_required == (("restate", ("token",)),)


# -- the loader's check against the running tables ------------------------------------------------


def test_a_new_route_reading_the_running_dead_letter_topic_is_refused_at_its_line() -> None:
    running = parse(OLD + '\n[dead_letter]\ntopic = "dlq"\n')
    # the new file moves the dead-letter topic away and reads the old one: the running
    # [dead_letter] stays until a restart, so its records would loop
    new = OLD + '\n[dead_letter]\ntopic = "dlq2"\n' + ORDERS.replace('"orders"', '"dlq"', 2)
    parse(new)  # fine on its own
    with pytest.raises(ConfigError) as caught:
        parse(new, running=running)
    [problem] = caught.value.problems
    line = new.splitlines().index('topic = "dlq"', new.count("\n") - 8) + 1
    assert problem.startswith(f"routes.toml:{line}: route 'dlq' reads the dead-letter topic 'dlq'")
    assert problem.endswith("stay in force until a restart)")


def test_a_delay_beyond_the_running_max_delay_is_refused() -> None:
    running = parse(OLD.replace("[delivery]\n", '[delivery]\nmax_delay = "1h"\n'))
    new = OLD.replace("[delivery]\n", '[delivery]\nmax_delay = "3h"\n').replace(
        'key = "{key}"', 'key = "{key}"\ndelay = "2h"'
    )
    with pytest.raises(ConfigError) as caught:
        parse(new, running=running)
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == [
        "delay 7200s is longer than [delivery] max_delay (3600s) (the running [dead_letter], "
        "[delivery] and [schema_registry] stay in force until a restart)"
    ]


def test_a_problem_of_the_file_itself_is_reported_once() -> None:
    running = parse(OLD + '\n[dead_letter]\ntopic = "dlq"\n')
    new = OLD + '\n[dead_letter]\ntopic = "dlq"\n' + ORDERS.replace('"orders"', '"dlq"', 2)
    with pytest.raises(ConfigError) as caught:
        parse(new, running=running)
    assert len(caught.value.problems) == 1
    assert "stay in force" not in caught.value.problems[0]
