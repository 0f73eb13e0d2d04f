"""``restate-bridge redrive``: records dead-lettered because their service was not deployed yet
are sent again once it is, each applied once and in key order; a dry run sends nothing; what
Restate accepted before is not run again; an interrupted run resumes without losing or repeating
anything; a second run has nothing left to do. On both brokers, against the real Restate."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.ingress import Client
from tests.helpers import route, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.procs import free_port
from tests.stack.restate import RestateServer
from tests.stack.services import REPO_ROOT, HandlerServer

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    r"(\d+) (?:sent|would be sent), (\d+) previously accepted, (\d+) still failing, "
    r"(\d+) skipped by filter"
)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(sent, previously accepted, still failing, skipped by filter) of the summary."""
        found = SUMMARY.search(self.stderr)
        assert found is not None, self.stderr
        sent, previous, failing, filtered = (int(n) for n in found.groups())
        return sent, previous, failing, filtered


async def redrive(routes: Path, *args: str) -> Run:
    """``restate-bridge redrive ROUTES ARGS`` in a process of its own."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "redrive", str(routes), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return Run(done.returncode, done.stdout, done.stderr)


async def test_dead_letters_are_redriven_once_in_key_order_after_the_fix(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    client: Client,
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap_servers
    service = f"Late{uuid.uuid4().hex[:8]}"
    topic, dlq, group = unique("redrive"), unique("redrive-dlq"), unique("g")
    await create_topics(bootstrap, [topic, dlq], partitions=2)
    keys = [unique("k") for _ in range(3)]
    sent = [(keys[n % 3], n) for n in range(12)]
    bridge = bridges.start(
        route(
            name="late", topic=topic, target="object", service=service, handler="take", key="{key}"
        ),
        group_id=group,
        dead_letter_topic=dlq,
        delivery='unknown_target_grace = "1s"',
    )
    written = await produce(
        bootstrap, topic, [Message(k.encode(), f'{{"n": {n}}}'.encode()) for k, n in sent]
    )
    letters = await read_topic(bootstrap, dlq, expect=len(sent), timeout=120)
    assert len(letters) == len(sent)
    assert {dict(d.headers)["bridge.route"] for d in letters} == {b"late"}
    # each carries its original record's time, which --since and --until read
    originals = await read_topic(bootstrap, topic, expect=len(sent))
    times = {(m.partition, m.offset): m.timestamp for m in originals}
    for letter in letters:
        headers = dict(letter.headers)
        where = (int(headers["bridge.partition"]), int(headers["bridge.offset"]))
        assert int(headers["bridge.timestamp"]) == times[where] > 0
    bridge.terminate()
    routes = bridge.routes_path

    # a dry run prints what it would send, with the keys the original sends had
    dry = await redrive(routes, "--dry-run")
    assert dry.code == 0, dry.stderr
    lines = [orjson.loads(line) for line in dry.stdout.splitlines()]
    assert len(lines) == len(sent), dry.stderr
    expected_keys = {f"{topic}-{m.partition}-{m.offset}:late" for m in written}
    assert {line["idempotency_key"] for line in lines} == expected_keys
    assert "dry run, nothing sent or committed: 12 would be sent" in dry.stderr

    # still not deployed: every one still fails (Restate knows no such service) and stays
    early = await redrive(routes, "--group-id", unique("early"))
    assert early.code == 1
    assert early.counts == (0, 0, 12, 0)
    assert early.stderr.count("still failing: the ingress refused it: 404") == 12

    # a filter that takes none of them
    none = await redrive(routes, "--dry-run", "--reason", "^no such error")
    assert none.code == 0, none.stderr
    assert (none.stdout, none.counts) == ("", (0, 0, 0, 12))

    # the ingress down: retried, then the run stops there, nothing committed
    down = tmp_path / "down.routes.toml"
    down.write_text(
        routes.read_text().replace(restate.ingress_url, f"http://127.0.0.1:{free_port()}")
    )
    stopped = await redrive(down)
    assert stopped.code == 1
    assert "stopped: " in stopped.stderr
    assert "failed 5 times" in stopped.stderr
    assert stopped.counts == (0, 0, 0, 0)

    deployment = HandlerServer(
        tmp_path / "late", "tests.stack.late_handlers:app", env={"LATE_SERVICE": service}
    )
    deployment.start()
    try:
        deployment.register_with(restate)
        await _redrive_after_the_fix(client, routes, service, sent, written)
    finally:
        deployment.stop()


async def _redrive_after_the_fix(
    client: Client, routes: Path, service: str, sent: list[tuple[str, int]], written: list[Any]
) -> None:
    # the first record of the first key was accepted once before (by hand, with its key)
    first_key, _ = sent[0]
    meta = written[0]
    await client.object(service, first_key, "take").send(
        b'{"n": 0}',
        content_type="application/json",
        idempotency_key=f"{meta.topic}-{meta.partition}-{meta.offset}:late",
    )
    await until(
        lambda: client.object(service, first_key, "get").request(),
        lambda got: got == [{"n": 0}],
        "the hand-sent record applied",
    )
    assert await client.object(service, sent[1][0], "get").request() == []  # the dry run sent none

    # interrupted after 5, then resumed: nothing lost, nothing twice
    part = await redrive(routes, "--limit", "5")
    assert part.code == 0, part.stderr
    rest = await redrive(routes)
    assert rest.code == 0, rest.stderr
    first, second = part.counts, rest.counts
    assert first[0] + first[1] == 5
    assert second[0] + second[1] == 7
    assert (first[0] + second[0], first[1] + second[1]) == (11, 1)
    assert (first[2], second[2]) == (0, 0)

    for key in dict(sent):
        expected = [{"n": n} for k, n in sent if k == key]
        await until(
            lambda key=key: client.object(service, key, "get").request(),
            lambda got, expected=expected: got == expected,
            f"{key}: every record once, in order",
        )

    again = await redrive(routes)
    assert again.code == 0, again.stderr
    assert again.counts == (0, 0, 0, 0)
    # from the start: Restate has them all, none runs again
    replay = await redrive(routes, "--from-start")
    assert replay.code == 0, replay.stderr
    assert replay.counts == (0, 12, 0, 0)
    await asyncio.sleep(1)
    for key in dict(sent):
        expected = [{"n": n} for k, n in sent if k == key]
        assert await client.object(service, key, "get").request() == expected
