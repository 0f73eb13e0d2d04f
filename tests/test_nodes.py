"""bridge.core.nodes: the choice of an ingress node, as tables; ``ingress_url`` lists; the health of
several nodes (``bridge.health``, its probe left out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, parse_config
from bridge.core.nodes import NodeChooser, describe_down, node_label
from bridge.deliver.health import IngressHealth
from bridge.operate.metrics import Metrics

# -- the chooser -------------------------------------------------------------------------------

# Each step: ("up", node), ("down", node), ("start", node), ("end", node), or ("pick", expected).
Step = tuple[str, int]


@pytest.mark.parametrize(
    ("count", "steps"),
    [
        pytest.param(1, [("pick", 0), ("pick", 0), ("up", 0), ("pick", 0)], id="one-node"),
        pytest.param(
            2,
            [("up", 0), ("up", 1), ("pick", 0), ("pick", 1), ("pick", 0), ("pick", 1)],
            id="equal-nodes-take-turns",
        ),
        pytest.param(
            3,
            [
                *[("up", 0), ("up", 1), ("up", 2), ("start", 0), ("start", 0), ("start", 1)],
                *[("pick", 2), ("pick", 2), ("start", 2), ("start", 2), ("pick", 1)],
            ],
            id="fewest-in-flight-wins",
        ),
        pytest.param(
            2,
            [("up", 0), ("up", 1), ("down", 0), ("pick", 1), ("pick", 1), ("pick", 1)],
            id="a-down-node-is-skipped",
        ),
        pytest.param(
            2,
            [("up", 0), ("up", 1), ("down", 0), ("start", 1), ("start", 1), ("pick", 1)],
            id="down-even-when-idle",
        ),
        pytest.param(
            2,
            [("up", 0), ("up", 1), ("down", 0), ("pick", 1), ("up", 0), ("pick", 1), ("pick", 0)],
            id="back-up-once-it-answers",
        ),
        pytest.param(
            3,
            [("pick", 0), ("pick", 1), ("pick", 2), ("pick", 0)],
            id="none-up-each-in-turn",
        ),
        pytest.param(
            3,
            [
                *[("up", 0), ("up", 1), ("up", 2), ("down", 0), ("down", 1), ("down", 2)],
                *[("pick", 0), ("pick", 1), ("up", 1), ("pick", 1), ("pick", 1)],
            ],
            id="all-down-then-one-answers",
        ),
        pytest.param(
            2,
            [("up", 0), ("up", 1), ("start", 0), ("end", 0), ("start", 1), ("pick", 0)],
            id="ended-sends-no-longer-count",
        ),
    ],
)
def test_choice(count: int, steps: list[Step]) -> None:
    chooser = NodeChooser(count)
    for i, (action, arg) in enumerate(steps):
        if action == "pick":
            assert chooser.pick() == arg, f"step {i}: {steps[: i + 1]}"
        elif action == "up":
            chooser.mark_up(arg)
        elif action == "down":
            chooser.mark_down(arg, "connect: refused")
        elif action == "start":
            chooser.started(arg)
        else:
            chooser.finished(arg)


def test_transitions_are_reported_once() -> None:
    chooser = NodeChooser(2)
    assert chooser.any_up is False
    assert chooser.mark_up(0) is True
    assert chooser.mark_up(0) is False
    assert chooser.any_up is True
    assert chooser.mark_down(0, "timeout") is True
    assert chooser.mark_down(0, "connect") is False
    assert chooser.nodes[0].reason == "connect"  # the last failure
    assert chooser.down() == [0, 1]


def test_no_nodes_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        NodeChooser(0)


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://bridge:s3cret@restate.example.com:8443/", "https://restate.example.com:8443/"),
        ("http://user@restate", "http://restate"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://restate:8080/prefix#frag", "http://restate:8080/prefix"),
    ],
)
def test_a_node_is_named_without_credentials(url: str, label: str) -> None:
    assert node_label(url) == label


def test_down_nodes_described() -> None:
    chooser = NodeChooser(3)
    chooser.mark_up(1)
    chooser.mark_down(0, "connect: refused")
    chooser.mark_down(2, "http_503: busy")
    assert describe_down(("http://a", "http://b", "http://c"), chooser) == (
        "node http://a: connect: refused; node http://c: http_503: busy"
    )
    single = NodeChooser(1)
    single.mark_down(0, "timeout: no answer")
    assert describe_down(("http://a",), single) == "timeout: no answer"


# -- ingress_url lists --------------------------------------------------------------------------

HEAD = '[kafka]\nbootstrap_servers = "b:9092"\n'
ROUTE = '\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'


def restate(line: str, env: dict[str, str] | None = None) -> tuple[str, ...]:
    config = parse_config(f"{HEAD}[restate]\n{line}\n{ROUTE}", Path("routes.toml"), env or {})
    return config.restate.ingress_urls


@pytest.mark.parametrize(
    ("line", "urls"),
    [
        ('ingress_url = "http://a:8080"', ("http://a:8080",)),
        ('ingress_url = ["http://a:8080", "https://b:8443"]', ("http://a:8080", "https://b:8443")),
        ('ingress_url = "http://a:8080, http://b:8080"', ("http://a:8080", "http://b:8080")),
    ],
)
def test_ingress_url_lists(line: str, urls: tuple[str, ...]) -> None:
    assert restate(line) == urls


def test_restate_url_may_list_nodes() -> None:
    env = {"RESTATE_URL": "http://x:1,http://y:2"}
    assert restate('ingress_url = "http://a:8080"', env) == ("http://x:1", "http://y:2")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            'ingress_url = ["http://a", "ftp://b"]',
            "ingress_url must start with http:// or https://",
        ),
        (
            'ingress_url = "http://a,,http://b"',
            "ingress_url: an empty entry in 'http://a,,http://b'",
        ),
        ('ingress_url = "http://a,"', "ingress_url: an empty entry in 'http://a,'"),
        (
            'ingress_url = ["http://a:1", "http://a:1/"]',
            "ingress_url 'http://a:1/' is listed twice",
        ),
        ('ingress_url = ["http://a:99999"]', "ingress_url 'http://a:99999': Port out of range"),
        ("ingress_url = []", "ingress_url must be a URL 'http(s)://host:port', a list of them"),
        ('ingress_url = ["http://a", 5]', "ingress_url must be a URL 'http(s)://host:port'"),
    ],
)
def test_ingress_url_mistakes(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        restate(line)
    (found,) = info.value.problems
    assert found.startswith(f"routes.toml:4: {problem}"), found


def test_restate_url_mistake_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        restate('ingress_url = "http://a"', {"RESTATE_URL": "http://x,nope"})
    assert info.value.problems == ["$RESTATE_URL: ingress_url must start with http:// or https://"]


def test_tls_files_need_an_https_node(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        restate(f'ingress_url = ["http://a", "http://b"]\nca_file = "{tmp_path}/ca.pem"')
    assert info.value.problems == [
        "routes.toml:5: ca_file is only used with an https:// ingress_url"
    ]


# -- the health of several nodes ------------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_ingress_is_up_while_one_node_is() -> None:
    metrics = Metrics()
    health = IngressHealth(metrics, ["http://u:pw@a:1", "http://b:2"])
    assert health.labels == ("http://a:1", "http://b:2")
    assert not health.up
    assert sample(metrics, "restate_bridge_ingress_node_up", node="http://a:1") == 0
    assert sample(metrics, "restate_bridge_ingress_node_sends_total", node="http://b:2") == 0
    health.mark_up(0)
    health.mark_up(1)
    assert health.up
    health.mark_down("connect: refused", 0)
    assert health.up
    assert health.down_nodes == ["http://a:1"]
    assert health.reason == "node http://a:1: connect: refused"
    assert sample(metrics, "restate_bridge_ingress_node_up", node="http://a:1") == 0
    assert sample(metrics, "restate_bridge_ingress_node_up", node="http://b:2") == 1
    assert sample(metrics, "restate_bridge_ingress_up") == 1
    node = health.pick()
    assert node == 1
    health.started(node)
    assert health.nodes() == [
        {"node": "http://a:1", "up": False, "reason": "connect: refused", "in_flight": 0},
        {"node": "http://b:2", "up": True, "reason": None, "in_flight": 1},
    ]
    health.finished(node)
    assert sample(metrics, "restate_bridge_ingress_node_sends_total", node="http://b:2") == 1
    health.mark_down("timeout: no answer", 1)
    assert not health.up
    assert sample(metrics, "restate_bridge_ingress_up") == 0
    assert health.reason == "node http://a:1: connect: refused; node http://b:2: timeout: no answer"


def test_a_send_under_way_when_its_node_went_down_does_not_bring_it_back() -> None:
    chooser = NodeChooser(2)
    chooser.mark_up(0)
    chooser.mark_up(1)
    before = chooser.started(0)  # under way while the node is being stopped
    chooser.mark_down(0, "connect: refused")
    assert chooser.answered(0, before) is False  # it answered what it had: still down
    assert chooser.down() == [0]
    chooser.mark_down(1, "connect: refused")
    during = chooser.started(0)  # every node down: sent to it all the same, and it answered
    assert chooser.answered(0, during) is True
    assert chooser.down() == [1]
