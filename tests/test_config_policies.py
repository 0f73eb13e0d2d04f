"""The per-route policies in a routing file: ``retry_on`` / ``dead_letter_on`` / ``block_on``,
``rate_limit`` / ``rate_limit_burst``, ``scope`` / ``limit_key``. Each mistake at its line, as
``check`` prints it; good values read into the route's config.

``route()`` lays a file out as in ``test_config_mistakes.py``: ``[[routes]]`` at line 4, extra
keys from line 9.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import BridgeConfig, ConfigError, parse_config
from bridge.core.status_policy import StatusPolicy, StatusRange
from bridge.core.template import Template

PATH = Path("routes.toml")
KAFKA = '[kafka]\nbootstrap_servers = "b:9092"\n'


def route(body: str = "", *, target: str = "service", key: str = "") -> str:
    return (
        f'{KAFKA}\n[[routes]]\ntopic = "t"\ntarget = "{target}"\nservice = "S"\n'
        f'handler = "h"\n{key}{body}'
    )


def parse(text: str) -> BridgeConfig:
    return parse_config(text, PATH, {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


FORMS = 'write a status such as 429, a class "4xx" or "5xx", or a range such as "400-404"'
ONLY = "only error statuses 400 to 599 can be listed"
RULE = "1 to 36 of the characters a-z A-Z 0-9 _ . -"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # status lists
        pytest.param(
            route("retry_on = [200]\n"),
            "routes.toml:9: retry_on: 200 is a success: the ingress accepted the record, there "
            f"is nothing to retry; {ONLY}",
            id="2xx-code",
        ),
        pytest.param(
            route('dead_letter_on = ["3xx"]\n'),
            f"routes.toml:9: dead_letter_on: 3xx is a redirect, which Restate's ingress never "
            f"answers; {ONLY}",
            id="3xx-class",
        ),
        pytest.param(
            route('block_on = ["5xx", "server errors"]\n'),
            f"routes.toml:9: block_on: 'server errors' is not a status; {FORMS}",
            id="malformed",
        ),
        pytest.param(
            route('retry_on = ["404-400"]\n'),
            "routes.toml:9: retry_on: '404-400': the range runs backwards; write the lower "
            "status first",
            id="backwards-range",
        ),
        pytest.param(
            route("retry_on = 409\n"),
            'routes.toml:9: retry_on must be a list such as [409, "5xx", "400-404"], not 409',
            id="not-a-list",
        ),
        pytest.param(
            route('retry_on = ["5xx"]\nblock_on = [400]\ndead_letter_on = [503]\n'),
            "routes.toml:11: status 503 is in both retry_on (5xx) and dead_letter_on (503); a "
            "status may be in one list only",
            id="in-two-lists",
        ),
        pytest.param(
            route('dead_letter_on = ["400-410"]\nblock_on = ["4xx"]\n'),
            "routes.toml:10: status 400 is in both dead_letter_on (400-410) and block_on (4xx); "
            "a status may be in one list only",
            id="ranges-overlap",
        ),
        # rate limit
        *(
            pytest.param(
                route(f"rate_limit = {value}\n"),
                "routes.toml:9: rate_limit must be a number of records per second from 0.001 to "
                f"1000000 (such as 50 or 0.5), not {shown}",
                id=f"rate-{shown}",
            )
            for value, shown in [
                ("0", "0"),
                ("-5", "-5"),
                ("0.0001", "0.0001"),
                ("1e7", "10000000.0"),
                ("nan", "nan"),
                ("inf", "inf"),
                ('"50"', "'50'"),
                ("true", "True"),
                ("[50]", "[50]"),
            ]
        ),
        pytest.param(
            route("rate_limit = 10\nrate_limit_burst = 0\n"),
            "routes.toml:10: 'rate_limit_burst' must be a positive integer",
            id="burst-zero",
        ),
        pytest.param(
            route("rate_limit = 10\nrate_limit_burst = 2.5\n"),
            "routes.toml:10: 'rate_limit_burst' must be a positive integer",
            id="burst-float",
        ),
        pytest.param(
            route("rate_limit_burst = 5\n"),
            "routes.toml:9: rate_limit_burst is only used with rate_limit; add rate_limit or "
            "remove it",
            id="burst-alone",
        ),
        # scope and limit key
        pytest.param(
            route('scope = "acme corp"\n'),
            f"routes.toml:9: scope 'acme corp' holds characters Restate refuses; it allows {RULE}",
            id="constant-scope-refused",
        ),
        pytest.param(
            route(f'scope = "{"s" * 37}"\n'),
            f"routes.toml:9: scope '{'s' * 37}' is 37 characters long; Restate allows {RULE}",
            id="constant-scope-too-long",
        ),
        pytest.param(
            route('scope = ""\n'),
            "routes.toml:9: 'scope' must be a non-empty template string",
            id="empty-scope",
        ),
        pytest.param(
            route('scope = "{header.tenant"\n'),
            "routes.toml:9: 'scope': unclosed '{' at position 0 in '{header.tenant'",
            id="scope-bad-template",
        ),
        pytest.param(
            route('scope = "t"\nlimit_key = "a/b/c"\n'),
            "routes.toml:10: limit key 'a/b/c' has 3 parts; Restate allows one or two joined by "
            "'/' (such as 'tenant' or 'tenant/user')",
            id="constant-limit-key-three-parts",
        ),
        pytest.param(
            route('limit_key = "{header.user}"\n'),
            "routes.toml:9: limit_key needs scope: Restate counts limit keys within a scope and "
            "refuses one on an unscoped invocation; add scope (for example "
            'scope = "{header.tenant}")',
            id="limit-key-without-scope",
        ),
        pytest.param(
            route('value_format = "raw"\nscope = "{value.tenant}"\n'),
            "routes.toml:10: 'value.tenant' reads a field of the value, but value_format is 'raw'",
            id="scope-field-of-a-raw-value",
        ),
        pytest.param(
            route('scope = "{key.tenant}"\n'),
            "routes.toml:9: 'key.tenant' reads a field of the key, but key_format is 'raw'; set "
            "key_format (json, avro, protobuf or json_schema)",
            id="limit-key-field-of-a-raw-key",
        ),
    ],
)
def test_one_mistake_at_its_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_status_lists_are_read() -> None:
    (r,) = parse(
        route('retry_on = [409, "425"]\ndead_letter_on = ["5xx"]\nblock_on = ["400-404", 422]\n')
    ).routes
    assert r.retry_on == (StatusRange(409, 409, "409"), StatusRange(425, 425, "425"))
    assert r.dead_letter_on == (StatusRange(500, 599, "5xx"),)
    assert r.block_on == (StatusRange(400, 404, "400-404"), StatusRange(422, 422, "422"))
    assert r.statuses == StatusPolicy(r.retry_on, r.dead_letter_on, r.block_on)
    assert r.statuses.treatment(503) == "dead_letter"


def test_without_lists_the_policy_is_empty() -> None:
    (r,) = parse(route()).routes
    assert (r.retry_on, r.dead_letter_on, r.block_on) == ((), (), ())
    assert not r.statuses
    assert (r.rate_limit, r.rate_limit_burst, r.scope, r.limit_key) == (None, None, None, None)


@pytest.mark.parametrize(
    ("lines", "rate", "burst"),
    [
        ("rate_limit = 50\n", 50.0, None),
        ("rate_limit = 0.5\n", 0.5, None),
        ("rate_limit = 0.001\n", 0.001, None),
        ("rate_limit = 1000000\n", 1_000_000.0, None),
        ("rate_limit = 20\nrate_limit_burst = 5\n", 20.0, 5),
        ("rate_limit = 2\nrate_limit_burst = 100\n", 2.0, 100),
    ],
)
def test_rate_limits_are_read(lines: str, rate: float, burst: int | None) -> None:
    (r,) = parse(route(lines)).routes
    assert (r.rate_limit, r.rate_limit_burst) == (rate, burst)
    assert isinstance(r.rate_limit, float)


def test_scope_and_limit_key_are_templates() -> None:
    (r,) = parse(
        route(
            'scope = "{header.tenant}"\nlimit_key = "{header.tenant}/{value.user}"\n',
            target="object",
            key='key = "{key}"\n',
        )
    ).routes
    assert r.scope == Template.parse("{header.tenant}")
    assert r.limit_key == Template.parse("{header.tenant}/{value.user}")
    (constant,) = parse(route('scope = "acme"\nlimit_key = "acme/batch"\n')).routes
    assert constant.scope is not None
    assert constant.scope.constant


def test_check_prints_every_policy_mistake_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(route('retry_on = [200]\nrate_limit = 0\nlimit_key = "x"\n', target="service"))
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{path}:9",
        f"{path}:10",
        f"{path}:11",
    ]
    assert "Traceback" not in done.stderr
