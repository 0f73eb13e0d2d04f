"""Soak: many records, hostile ones among them, while bridges are killed and Restate stalls.

    .venv/bin/python -m bench.soak [--records 50000] [--keys 500] [--partitions 8]
        [--broker tansu|apache-kafka] [--hostile-share 0.02] [--duration-cap 1200] [--seed N]
        [--hostile-kinds not-json,...] [--stall-timeout 180] [--fault-gap 3,10]
        [--produce-rate 250] [--no-restate-restart]

Starts its own stack (broker, Restate, the test handlers) as ``bench.bridge`` does, creates a topic
and a dead-letter topic, and produces ``--records`` records ``{"k": key, "n": seq}`` over ``--keys``
``Recorder`` object keys while one bridge replica consumes them (routes: :func:`soak_routes`). A
share of the records is hostile, interleaved on the same keys (see :data:`HOSTILE_KINDS`). Until
every partition is committed to its end (the group's committed offsets), faults are injected on a
seeded random schedule, each kind once first in a random order, then at random: kill -9 of a
replica and its restart, a second replica joining and leaving (SIGTERM), Restate frozen (SIGSTOP,
then SIGCONT), Restate frozen and a replica killed while the backlog drains, and Restate restarted.
A replica that exits on its own is reported ("bridge exited with code X") and started again.

At the end every key's ``Recorder`` state and the dead-letter topic are read back and checked:

- lost: a good record whose value is missing from its key's state;
- duplicated: a value seen more than once in a key's state;
- out of order: a value that arrives after one with a higher offset of the same key;
- unaccounted: a hostile record neither dead-lettered nor applied.

Any of these, a partition not committed to its end, or a bridge exit nobody asked for makes the
exit code 1. ``tests/test_soak.py`` runs :func:`run_soak` with small numbers against the session's
stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shlex
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bridge.ingress import Client, IngressError
from tests.stack.bridge_process import BridgeProcess, routes_toml
from tests.stack.brokers import Broker, BrokerUnavailable, make_broker
from tests.stack.kafka_io import create_topics
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

GOOD = "good"
HOSTILE_KINDS = (
    "not-json",  # the value is not JSON; the route's body needs JSON
    "missing-field",  # JSON without the field the body needs
    "absurd-delay",  # delay header "1000000000d" on the delayed route
    "control-header",  # the forwarded x-trace header holds CR/LF and control bytes
    "non-utf8-key",  # the Kafka key is not UTF-8; the route's object key is "{key}"
    "tombstone",  # a key and no value
    "no-key-no-value",  # neither key nor value (Java producers can write it)
)
ABSURD_DELAY = b"1000000000d"
CONTROL_HEADER = b"t\r\nx-injected: 1\x00\x07\x7f"
FAULT_KINDS = ("kill", "join", "leave", "freeze", "freeze-kill", "restart-restate")
FAULT_NAMES = {
    "kill": "kill -9 + restart",
    "join": "replica joins",
    "leave": "replica leaves (SIGTERM)",
    "freeze": "Restate frozen (SIGSTOP/SIGCONT)",
    "freeze-kill": "Restate frozen, then kill -9 while the backlog drains",
    "restart-restate": "Restate restarted",
    "exited": "bridge exited on its own",
    "spawn-failed": "could not spawn a bridge (the machine)",
    "injector-error": "a fault could not be injected",
}


@dataclass(frozen=True)
class SoakConfig:
    records: int = 50_000
    keys: int = 500
    partitions: int = 8
    hostile_share: float = 0.02
    hostile_kinds: tuple[str, ...] = HOSTILE_KINDS
    """The hostile kinds drawn from (each as likely)."""
    seed: int = 1
    duration_cap: float = 1200.0
    """Seconds from the start of production until the soak stops waiting for commits."""
    stall_timeout: float = 180.0
    """Stop waiting when no committed offset moved for this long."""
    produce_rate: float | None = None
    """Records per second; None: as fast as the broker takes them."""
    delayed_share: float = 0.05
    """Share of the good records sent through the delayed route with a zero delay."""
    faults: tuple[str, ...] | None = None
    """The faults, in order (finite: all of them are injected before the soak ends); None: random
    faults, seeded, each kind at least once, until every partition is committed to its end."""
    fault_gap: tuple[float, float] = (3.0, 10.0)
    """Seconds between two faults, drawn uniformly."""
    restart_restate: bool = True
    """False: random faults never restart Restate (a shared server)."""
    settle_timeout: float = 60.0
    """How long to wait for accepted invocations to show up in the Recorder states."""
    kill_restart: tuple[float, float] = (0.5, 2.0)
    """Seconds between a kill -9 and the replica's restart, drawn uniformly. On tansu 0.6.0 keep
    it above the session timeout: a member that joins while a killed one's session is still
    valid can leave tansu with a generation that names the dead member, and the next rebalance
    then waits for it without end (the group never settles; Apache Kafka drops it)."""


# -- the records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One record to produce, and what should become of it."""

    kind: str
    """``good`` or one of :data:`HOSTILE_KINDS`."""
    route: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int
    obj_key: str | None
    """The ``Recorder`` key the record's value would be appended to (None: not readable back)."""
    n: int | None
    """The value the ``Recorder`` would append (the body is ``{value.n}``)."""


@dataclass(frozen=True)
class Produced:
    planned: Planned
    offset: int


def plan_records(config: SoakConfig, prefix: str) -> list[Planned]:
    """``config.records`` records in production order; seeded by ``config.seed``."""
    rng = random.Random(config.seed)
    out = []
    for n in range(config.records):
        index = rng.randrange(config.keys)
        obj_key = f"{prefix}-k{index}"
        partition = index % config.partitions
        hostile = rng.random() < config.hostile_share
        kind = rng.choice(config.hostile_kinds) if hostile else GOOD
        out.append(_planned(kind, n, obj_key, partition, rng.random() < config.delayed_share))
    return out


def _planned(kind: str, n: int, obj_key: str, partition: int, delayed: bool) -> Planned:
    key: bytes | None = obj_key.encode()
    value: bytes | None = orjson.dumps({"k": obj_key, "n": n})
    # good records take the delayed route now and then (a zero delay); hostile ones the route
    # their kind is about: the delayed one for an absurd delay, the forwarding one for the rest
    route = "delayed" if (delayed and kind == GOOD) or kind == "absurd-delay" else "rec"
    headers: dict[str, bytes] = {"route": route.encode(), "x-trace": f"t{n}".encode()}
    if route == "delayed":
        headers["delay"] = b"0s"
    readable: str | None = obj_key
    number: int | None = n
    if kind == "not-json":
        value, number = b"{not json " + str(n).encode(), None
    elif kind == "missing-field":
        value, number = orjson.dumps({"k": obj_key}), None
    elif kind == "absurd-delay":
        headers["delay"] = ABSURD_DELAY
    elif kind == "control-header":
        headers["x-trace"] = CONTROL_HEADER
    elif kind == "non-utf8-key":
        key, readable = b"\xff\xfe" + obj_key.encode(), None
    elif kind == "tombstone":
        value, number = None, None
    elif kind == "no-key-no-value":
        key, value, readable, number = None, None, None, None
    return Planned(kind, route, key, value, tuple(headers.items()), partition, readable, number)


def soak_routes(topic: str) -> str:
    """Two routes to ``Recorder/record``, keyed by the record key; a ``route`` header picks one."""
    return f"""
# Every record carries a "route" header naming the one route it takes.
[[routes]]
name = "rec"
topic = "{topic}"
match = {{ "header.route" = "rec" }}
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
body = "{{value.n}}"    # needs JSON: the Recorder appends n
headers = ["x-trace"]   # forwarded to the handler

[[routes]]
name = "delayed"
topic = "{topic}"
match = {{ "header.route" = "delayed" }}
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
body = "{{value.n}}"
delay = "{{header.delay}}"
"""


# -- the verdict (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterSeen:
    partition: int
    offset: int
    route: str
    reason: str


@dataclass
class Verdict:
    good: int = 0
    hostile: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    lost_committed: int = 0
    """Lost records below their partition's committed offset: a commit went past them (the
    rest were never delivered: the bridge was stuck or stopped before them)."""
    duplicated: int = 0
    out_of_order: int = 0
    unaccounted: Counter[str] = field(default_factory=Counter)
    unknown_values: int = 0
    """Values in a Recorder state that no produced record explains."""
    dead_lettered: Counter[str] = field(default_factory=Counter)
    applied_hostile: Counter[str] = field(default_factory=Counter)
    dead_letter_repeats: int = 0
    """Dead letters written more than once for one record (at least once: allowed)."""
    good_dead_lettered: int = 0
    examples: list[str] = field(default_factory=list)
    """A few cases of each problem, for the report."""
    _noted: Counter[str] = field(default_factory=Counter)

    @property
    def unaccounted_total(self) -> int:
        return sum(self.unaccounted.values())

    def note(self, text: str) -> None:
        what = text.partition(":")[0]
        self._noted[what] += 1
        if self._noted[what] <= 3:
            self.examples.append(text)


def evaluate(
    produced: Sequence[Produced],
    states: dict[str, list[Any]],
    dead_letters: Sequence[DeadLetterSeen],
    committed: dict[int, int] | None = None,
) -> Verdict:
    """Lost, duplicated, out of order and unaccounted records, from what Restate and the
    dead-letter topic hold. ``states``: each readable key's ``Recorder`` list; ``committed``:
    the group's committed offset per partition."""
    v = Verdict()
    offset_of: dict[tuple[str, int], int] = {}
    for p in produced:
        if p.planned.obj_key is not None and p.planned.n is not None:
            offset_of[(p.planned.obj_key, p.planned.n)] = p.offset
    letters: dict[tuple[int, int], list[DeadLetterSeen]] = {}
    for d in dead_letters:
        letters.setdefault((d.partition, d.offset), []).append(d)
    v.dead_letter_repeats = sum(len(ds) - 1 for ds in letters.values())
    seen: dict[str, Counter[Any]] = {}
    for obj_key, values in states.items():
        counts = seen[obj_key] = Counter(_hashable(x) for x in values)
        for value, count in counts.items():
            if count > 1:
                v.duplicated += count - 1
                v.note(f"duplicated: {obj_key} got {value!r} {count} times")
        high = -1
        first: set[Any] = set()
        for raw in values:
            value = _hashable(raw)
            if value in first:
                continue
            first.add(value)
            offset = offset_of.get((obj_key, value)) if isinstance(value, int) else None
            if offset is None:
                v.unknown_values += 1
                v.note(f"unknown: {obj_key} got {value!r}, which no record explains")
            elif offset < high:
                v.out_of_order += 1
                v.note(f"out of order: {obj_key} got n={value} (offset {offset}) after {high}")
            else:
                high = offset
    for p in produced:
        pl = p.planned
        applied = pl.obj_key in seen and pl.n is not None and seen[pl.obj_key][pl.n] > 0
        letter = letters.get((pl.partition, p.offset))
        if pl.kind == GOOD:
            v.good += 1
            if letter:
                v.good_dead_lettered += 1
                v.note(f"good dead-lettered: {pl.partition}@{p.offset}: {letter[0].reason}")
            if not applied:
                v.lost += 1
                v.note(f"lost: {pl.obj_key} n={pl.n} ({pl.partition}@{p.offset})")
                if committed is not None and p.offset < committed.get(pl.partition, 0):
                    v.lost_committed += 1
            continue
        v.hostile[pl.kind] += 1
        if letter:
            v.dead_lettered[pl.kind] += 1
        if applied:
            v.applied_hostile[pl.kind] += 1
        if not letter and not applied:
            v.unaccounted[pl.kind] += 1
            v.note(f"unaccounted {pl.kind}: {pl.partition}@{p.offset} (key {pl.obj_key})")
    return v


def _hashable(value: Any) -> Any:
    return value if isinstance(value, int | str | float | bool | None) else orjson.dumps(value)


# -- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds since the soak started."""
    kind: str
    detail: str


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` (``VmHWM``), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Replica:
    """One bridge process of the soak's group, started again after every kill."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.bridge = BridgeProcess(workdir, name)
        self.wanted = False
        """Should be running: the monitor restarts it when it is not."""
        self.busy = False
        """The injector is stopping or starting it: the monitor keeps off."""
        self.starts = 0
        self.peak_kib = 0

    def configure(self, text: str) -> None:
        self.bridge.write_routes(text)

    def start(self) -> None:
        self.bridge.process.start()
        self.starts += 1
        self.wanted = True

    def alive(self) -> bool:
        return self.bridge.process.alive()

    def sample(self) -> None:
        if self.alive():
            self.peak_kib = max(self.peak_kib, vm_hwm_kib(self.bridge.process.pid))

    def returncode(self) -> int | None:
        proc = self.bridge.process.proc
        return None if proc is None else proc.returncode

    def last_error(self) -> str:
        """The log's last line that names an error (the end of a traceback), else its last."""
        lines = [ln.strip() for ln in self.bridge.process.log_tail(60).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "Exception" in ln]
        return (errors or lines or ["(empty log)"])[-1][:200]


@dataclass
class Outcome:
    """Everything a soak run measured."""

    config: SoakConfig
    broker: str
    verdict: Verdict
    faults: list[Fault]
    stop_reason: str
    """``committed`` (every partition committed to its end), ``cap`` or ``stalled``."""
    committed: dict[int, int]
    ends: dict[int, int]
    peak_kib: dict[str, int]
    wall_s: float
    done_s: float
    """Seconds from the first record produced to the last commit (or the stop)."""
    final_exit_codes: dict[str, int | None]
    restate_statuses: dict[str, int]
    workdir: Path

    @property
    def produced(self) -> int:
        return self.verdict.good + sum(self.verdict.hostile.values())

    @property
    def unrequested_exits(self) -> int:
        bad_leaves = sum(1 for f in self.faults if f.kind == "leave" and "code 0" not in f.detail)
        bad_final = sum(1 for c in self.final_exit_codes.values() if c not in (0, None))
        return sum(1 for f in self.faults if f.kind == "exited") + bad_leaves + bad_final

    @property
    def failures(self) -> list[str]:
        v = self.verdict
        out = []
        for name, count in (
            ("lost", v.lost),
            ("duplicated", v.duplicated),
            ("out of order", v.out_of_order),
            ("unaccounted", v.unaccounted_total),
            ("unknown values", v.unknown_values),
            ("bridge exits", self.unrequested_exits),
        ):
            if count:
                out.append(f"{name}: {count}")
        if self.stop_reason != "committed":
            out.append(f"not committed to the end ({self.stop_reason})")
        return out

    def fault_counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)


class Soak:
    """One run: production, replicas, the fault injector, the commit watcher."""

    def __init__(
        self, broker: Broker, restate: RestateServer, workdir: Path, config: SoakConfig
    ) -> None:
        self.broker = broker
        self.restate = restate
        self.workdir = workdir
        self.config = config
        unknown = set(config.faults or ()) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULT_KINDS}")
        run_id = uuid.uuid4().hex[:8]
        self.topic = f"soak-{run_id}"
        self.dead_letter_topic = f"soak-{run_id}.dlq"
        self.group = f"soak-{run_id}"
        self.prefix = f"soak{run_id}"
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.planned = plan_records(config, self.prefix)
        self.produced: list[Produced] = []
        self.production_done = asyncio.Event()
        self.finished = asyncio.Event()
        self.faults: list[Fault] = []
        self.t0 = time.monotonic()
        self.replicas = [self._replica("soak-a"), self._replica("soak-b")]
        self.round_done = False
        """Random faults: each kind was injected once (the soak does not end before)."""

    def _replica(self, name: str) -> Replica:
        replica = Replica(self.workdir, name)
        replica.configure(
            routes_toml(
                bootstrap=self.broker.bootstrap_servers,
                ingress_url=self.restate.ingress_url,
                group_id=self.group,
                metrics_port=replica.bridge.metrics_port,
                routes=soak_routes(self.topic),
                dead_letter_topic=self.dead_letter_topic,
            )
        )
        return replica

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, kind: str, detail: str) -> None:
        self.faults.append(Fault(round(self.now(), 1), kind, detail))
        print(f"  [{self.now():7.1f}s] {FAULT_NAMES.get(kind, kind)}: {detail}", flush=True)

    # -- production ----------------------------------------------------------------------------

    async def produce(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap_servers, acks="all", linger_ms=5
        )
        await producer.start()
        try:
            rate = self.config.produce_rate
            chunk = max(1, int(rate / 20)) if rate else 500  # paced: a chunk every 50 ms
            start = time.monotonic()
            for i in range(0, len(self.planned), chunk):
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                batch = self.planned[i : i + chunk]
                futures = [await self._send(producer, p) for p in batch]
                for p, meta in zip(batch, await asyncio.gather(*futures), strict=True):
                    self.produced.append(Produced(p, meta.offset))
        finally:
            await producer.stop()
            self.production_done.set()

    async def _send(self, producer: AIOKafkaProducer, p: Planned) -> asyncio.Future[Any]:
        headers = list(p.headers)
        if p.key is None and p.value is None:
            # aiokafka's send() refuses it; a batch of one writes it as a Java producer can
            batch = producer.create_batch()
            batch.append(key=None, value=None, timestamp=None, headers=headers)
            batch.close()
            future: asyncio.Future[Any] = await producer.send_batch(
                batch, self.topic, partition=p.partition
            )
            return future
        future = await producer.send(
            self.topic, p.value, key=p.key, headers=headers, partition=p.partition
        )
        return future

    # -- replicas and faults -------------------------------------------------------------------

    async def monitor(self) -> None:
        """Sample peak RSS; report and restart a replica that exited on its own."""
        while not self.finished.is_set():
            for r in self.replicas:
                r.sample()
                if r.wanted and not r.busy and not r.alive():
                    self.fault(
                        "exited", f"{r.name} exited with code {r.returncode()}: {r.last_error()}"
                    )
                    r.busy = True
                    asyncio.get_running_loop().call_later(2.0, self._restart, r)
            await asyncio.sleep(0.5)

    def _restart(self, r: Replica) -> None:
        """Start ``r`` again if it is wanted; a failed spawn (the machine's fault, not the
        bridge's) is reported and tried again every 2 s, ``r`` staying busy meanwhile."""
        if r.wanted and not self.finished.is_set():
            try:
                r.start()
            except OSError as exc:
                self.fault("spawn-failed", f"{r.name} could not be started ({exc}); again in 2s")
                asyncio.get_running_loop().call_later(2.0, self._restart, r)
                return
        r.busy = False

    def fault_plan(self) -> Iterator[str]:
        if self.config.faults is not None:
            yield from self.config.faults
            return
        weights = {
            "kill": 2,
            "join": 2,
            "leave": 2,
            "freeze": 2,
            "freeze-kill": 2,
            "restart-restate": 1,
        }
        if not self.config.restart_restate:
            del weights["restart-restate"]
        # every kind once, in a random order (a replica leaves after it joined), then at random
        first = [k for k in weights if k != "leave"]
        self.rng.shuffle(first)
        first.insert(self.rng.randint(first.index("join") + 1, len(first)), "leave")
        yield from first
        self.round_done = True
        while True:
            second = self.replicas[1].wanted
            usable = {k: w for k, w in weights.items() if k != ("leave" if not second else "join")}
            yield self.rng.choices(list(usable), weights=list(usable.values()))[0]

    async def inject(self) -> None:
        lo, hi = self.config.fault_gap
        for kind in self.fault_plan():
            await asyncio.sleep(self.rng.uniform(lo, hi))
            if self.finished.is_set():
                return
            try:
                await getattr(self, "_" + kind.replace("-", "_"))()
            except Exception as exc:  # a fault that failed is reported; the soak goes on
                self.fault("injector-error", f"{kind} failed: {exc!r}")

    async def _kill(self, kind: str = "kill", why: str = "") -> None:
        live = [r for r in self.replicas if r.wanted and not r.busy and r.alive()]
        if not live:
            return
        r = self.rng.choice(live)
        r.busy = True
        try:
            r.sample()
            await asyncio.to_thread(r.bridge.kill)
            pause = self.rng.uniform(*self.config.kill_restart)
            pid = r.bridge.process.pid
            self.fault(kind, f"{why}{r.name} (pid {pid}) killed, restarted {pause:.1f}s later")
            await asyncio.sleep(pause)
        finally:
            self._restart(r)

    async def _freeze_kill(self) -> None:
        """Records pile up while Restate is stopped; after the thaw they finish out of offset
        order (many keys) and a replica is killed in the middle: only a gap-aware commit
        survives this."""
        seconds, after = self.rng.uniform(2.0, 4.0), self.rng.uniform(0.2, 0.8)
        await self._freeze(seconds, record=False)
        await asyncio.sleep(after)
        await self._kill("freeze-kill", f"Restate stopped {seconds:.1f}s; {after:.1f}s after: ")

    async def _join(self) -> None:
        r = self.replicas[1]
        if r.wanted or r.busy:
            return
        r.busy, r.wanted = True, True
        self.fault("join", f"{r.name} started")
        self._restart(r)

    async def _leave(self) -> None:
        r = self.replicas[1]
        if not r.wanted or r.busy:
            return
        r.busy, r.wanted = True, False
        try:
            r.sample()
            code = await asyncio.to_thread(r.bridge.terminate, 60)
            self.fault("leave", f"{r.name} stopped with code {code}")
        finally:
            r.busy = False

    async def _freeze(self, seconds: float | None = None, *, record: bool = True) -> None:
        assert self.restate.process is not None
        seconds = self.rng.uniform(2.0, 5.0) if seconds is None else seconds
        self.restate.process.signal(signal.SIGSTOP)
        try:
            if record:
                self.fault("freeze", f"Restate stopped for {seconds:.1f}s")
            await asyncio.sleep(seconds)
        finally:
            self.thaw()

    def thaw(self) -> None:
        if self.restate.process is not None:
            self.restate.process.signal(signal.SIGCONT)

    async def _restart_restate(self) -> None:
        started = time.monotonic()
        await asyncio.to_thread(self.restate.restart)
        self.fault("restart-restate", f"down and back in {time.monotonic() - started:.1f}s")

    # -- the run -------------------------------------------------------------------------------

    async def committed(self, admin: AIOKafkaAdminClient) -> dict[int, int]:
        parts = [TopicPartition(self.topic, p) for p in range(self.config.partitions)]
        try:  # bounded: a broker that hangs must not hold the cap and the stall clock
            offsets = await asyncio.wait_for(
                admin.list_consumer_group_offsets(self.group, partitions=parts), 10
            )
        except Exception:  # a coordinator moving, not there yet, or hanging: ask again later
            return {}
        return {tp.partition: om.offset for tp, om in offsets.items() if om.offset >= 0}

    def ends(self) -> dict[int, int]:
        ends: dict[int, int] = {}
        for p in self.produced:
            part = p.planned.partition
            ends[part] = max(ends.get(part, 0), p.offset + 1)
        return ends

    async def wait_committed(self, injector: asyncio.Task[None]) -> tuple[str, dict[int, int]]:
        """Until every partition is committed to its end (and a finite fault plan ran out)."""
        cfg = self.config
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
        await admin.start()
        try:
            last_move, last_total, committed = time.monotonic(), -1, {}
            next_line = 0.0
            while True:
                await asyncio.sleep(1.0)
                committed = await self.committed(admin)
                total = sum(committed.values())
                if total != last_total:
                    last_move, last_total = time.monotonic(), total
                ends = self.ends()
                complete = self.production_done.is_set() and all(
                    committed.get(p, 0) >= end for p, end in ends.items()
                )
                if self.now() >= next_line:
                    print(
                        f"  [{self.now():7.1f}s] produced {len(self.produced)}/"
                        f"{len(self.planned)}, committed {total}/{sum(ends.values())}",
                        flush=True,
                    )
                    next_line = self.now() + 15
                if complete and (injector.done() if cfg.faults is not None else self.round_done):
                    return "committed", committed
                if self.now() > cfg.duration_cap:
                    return "cap", committed
                if not complete and time.monotonic() - last_move > cfg.stall_timeout:
                    return "stalled", committed
        finally:
            await admin.close()

    async def run(self) -> Outcome:
        cfg = self.config
        await create_topics(self.broker.bootstrap_servers, [self.topic], cfg.partitions)
        await create_topics(self.broker.bootstrap_servers, [self.dead_letter_topic], 1)
        print(
            f"soak: topic {self.topic}, group {self.group}, keys {self.prefix}-k*, "
            f"logs in {self.workdir}",
            flush=True,
        )
        self.t0 = time.monotonic()
        first = self.replicas[0]
        first.start()
        await asyncio.to_thread(
            first.bridge.process.wait_until, first.bridge.ready, 60, "ready (/readyz)"
        )
        produced_at = time.monotonic()
        tasks = [asyncio.create_task(c) for c in (self.produce(), self.monitor(), self.inject())]
        producer, _, injector = tasks
        try:
            stop_reason, committed = await self.wait_committed(injector)
            done_s = time.monotonic() - produced_at
            self.finished.set()
            if producer.done() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
        finally:
            self.finished.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.thaw()
            final_codes = await self.stop_replicas()
        print(f"  [{self.now():7.1f}s] {stop_reason}; reading back", flush=True)
        states = await self.read_states(complete=stop_reason == "committed")
        letters = await self.read_dead_letters()
        verdict = evaluate(self.produced, states, letters, committed)
        return Outcome(
            config=cfg,
            broker=getattr(self.broker, "name", "?"),
            verdict=verdict,
            faults=self.faults,
            stop_reason=stop_reason,
            committed=committed,
            ends=self.ends(),
            peak_kib={r.name: r.peak_kib for r in self.replicas if r.starts},
            wall_s=self.now(),
            done_s=done_s,
            final_exit_codes=final_codes,
            restate_statuses=self.restate_statuses(),
            workdir=self.workdir,
        )

    async def stop_replicas(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for r in self.replicas:
            if not r.starts:
                continue
            r.sample()
            wanted, r.wanted = r.wanted, False
            alive = r.alive()
            if alive:  # where its tasks wait, in its log: a replica that is stuck says where
                r.bridge.signal(signal.SIGUSR1)
                await asyncio.sleep(0.2)
            code = await asyncio.to_thread(r.bridge.terminate, 60)
            if wanted and alive:
                codes[r.name] = code
        return codes

    # -- reading back --------------------------------------------------------------------------

    async def read_states(self, *, complete: bool) -> dict[str, list[Any]]:
        """Every key's ``Recorder`` list, again while good values are still missing (accepted
        invocations may not have run yet) until ``settle_timeout``."""
        keys = sorted({p.planned.obj_key for p in self.produced if p.planned.obj_key})
        good = [p for p in self.produced if p.planned.kind == GOOD]
        deadline = time.monotonic() + (self.config.settle_timeout if complete else 10.0)
        async with Client(self.restate.ingress_url, timeout=30) as client:
            limit = asyncio.Semaphore(32)

            async def one(key: str) -> list[Any]:
                async with limit:
                    for attempt in range(20):
                        try:
                            value = await client.object("Recorder", key, "get").request()
                            return list(value)
                        except IngressError:
                            if attempt == 19:
                                raise
                            await asyncio.sleep(0.5)
                return []

            while True:
                states = dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))
                have = {(k, x) for k, values in states.items() for x in values if type(x) is int}
                missing = sum(1 for p in good if (p.planned.obj_key, p.planned.n) not in have)
                if not missing or time.monotonic() > deadline:
                    return states
                print(f"  [{self.now():7.1f}s] {missing} good values not applied yet", flush=True)
                await asyncio.sleep(2.0)

    async def read_dead_letters(self) -> list[DeadLetterSeen]:
        """The dead-letter topic from the start, until it has been quiet for a few seconds."""
        consumer = AIOKafkaConsumer(
            self.dead_letter_topic,
            bootstrap_servers=self.broker.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        out: list[DeadLetterSeen] = []
        try:
            started = last = time.monotonic()
            while time.monotonic() - last < 4.0 and time.monotonic() - started < 60:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    last = time.monotonic()
                    for m in messages:
                        h = {k: v.decode(errors="replace") for k, v in m.headers}
                        if h.get("bridge.topic") != self.topic:
                            continue
                        out.append(
                            DeadLetterSeen(
                                int(h["bridge.partition"]),
                                int(h["bridge.offset"]),
                                h.get("bridge.route", "?"),
                                h.get("bridge.error", "?"),
                            )
                        )
        finally:
            await consumer.stop()
        return out

    def restate_statuses(self) -> dict[str, int]:
        """The soak's ``Recorder/record`` invocations by status (``completed``, ``scheduled``,
        ``backing-off`` ...): an invocation that is not completed points at a record the bridge
        sent but Restate cannot run."""
        sql = (
            "select status, count(*) as n from sys_invocation where target_service_name = "
            f"'Recorder' and target_handler_name = 'record' and target_service_key like "
            f"'{self.prefix}-%' group by status"
        )
        try:
            return {row["status"]: int(row["n"]) for row in self.restate.query(sql)}
        except Exception as exc:  # diagnostics only
            return {f"(query failed: {exc})": 0}


async def run_soak(
    broker: Broker, restate: RestateServer, workdir: Path, config: SoakConfig
) -> Outcome:
    """One soak against a running broker and Restate (with the test handlers registered)."""
    soak = Soak(broker, restate, workdir, config)
    try:
        return await soak.run()
    finally:
        soak.thaw()  # whatever happened, Restate is never left stopped


# -- the report --------------------------------------------------------------------------------


def report(o: Outcome) -> str:
    v, c = o.verdict, o.config
    rows = [
        ("records produced", f"{o.produced} ({v.good} good, {sum(v.hostile.values())} hostile)"),
        ("lost", f"{v.lost} ({v.lost_committed} behind the committed offset)"),
        ("duplicated", str(v.duplicated)),
        ("out of order", str(v.out_of_order)),
        ("unaccounted", _by_kind(v.unaccounted)),
    ]
    if v.unknown_values:
        rows.append(("unknown values", str(v.unknown_values)))
    rows += [
        ("hostile produced", _by_kind(v.hostile)),
        ("hostile dead-lettered", _by_kind(v.dead_lettered)),
        ("hostile applied", _by_kind(v.applied_hostile)),
        ("dead letters repeated", f"{v.dead_letter_repeats} (at least once: allowed)"),
        ("good dead-lettered", str(v.good_dead_lettered)),
        ("bridge exits", f"{o.unrequested_exits} (on its own, or non-zero after SIGTERM)"),
        ("stopped because", _stop(o)),
        ("faults injected", _by_kind(o.fault_counts()) or "0"),
        ("peak RSS (VmHWM)", ", ".join(f"{n} {k / 1024:.0f} MiB" for n, k in o.peak_kib.items())),
        ("wall time", f"{o.wall_s:.0f} s"),
        (
            "records/s",
            f"{o.produced / max(o.done_s, 1e-9):.0f} (first produce to "
            f"{'last commit' if o.stop_reason == 'committed' else 'the stop'}, "
            f"{o.done_s:.0f} s)",
        ),
        ("Restate invocations", _by_kind(Counter(o.restate_statuses))),
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = [
        "",
        f"soak: {c.records} records, {c.keys} keys, {c.partitions} partitions, broker {o.broker}, "
        f"hostile share {c.hostile_share}, seed {c.seed}",
    ]
    lines += [f"  {name:<{width}}{value}" for name, value in rows]
    lines.append("  faults:")
    lines += [f"    {f.at:7.1f}s  {FAULT_NAMES.get(f.kind, f.kind)}: {f.detail}" for f in o.faults]
    if v.examples:
        lines.append("  examples:")
        lines += [f"    {e}" for e in v.examples]
    failures = o.failures
    lines.append(f"verdict: {'FAIL - ' + '; '.join(failures) if failures else 'PASS'}")
    lines.append(f"logs: {o.workdir}")
    return "\n".join(lines)


def _by_kind(counts: Counter[str]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) + ")"


def _stop(o: Outcome) -> str:
    if o.stop_reason == "committed":
        return "every partition committed to its end"
    behind = {p: f"{o.committed.get(p, 0)}/{end}" for p, end in sorted(o.ends.items())}
    return f"{o.stop_reason}; committed/end per partition {behind}"


# -- the command -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--broker", choices=["tansu", "apache-kafka"], default="tansu")
    parser.add_argument("--hostile-share", type=float, default=0.02)
    parser.add_argument(
        "--hostile-kinds",
        default=",".join(HOSTILE_KINDS),
        help="comma-separated, from: " + ", ".join(HOSTILE_KINDS),
    )
    parser.add_argument("--duration-cap", type=float, default=1200, help="seconds")
    parser.add_argument("--stall-timeout", type=float, default=180, help="seconds")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--fault-gap", default="3,10", help="LO,HI seconds between faults")
    parser.add_argument(
        "--produce-rate",
        type=float,
        default=250,
        help="records/s (default 250: records keep arriving while faults happen); 0: at once",
    )
    parser.add_argument("--no-restate-restart", action="store_true")
    parser.add_argument(
        "--kill-restart",
        default=None,
        help="LO,HI seconds from a kill -9 to the restart (default 0.5,2; 7,8 on tansu: see "
        "SoakConfig.kill_restart)",
    )
    args = parser.parse_args()
    lo, _, hi = args.fault_gap.partition(",")
    restart = args.kill_restart or ("7,8" if args.broker == "tansu" else "0.5,2")
    rlo, _, rhi = restart.partition(",")
    kinds = tuple(k.strip() for k in args.hostile_kinds.split(",") if k.strip())
    if not kinds or not set(kinds) <= set(HOSTILE_KINDS):
        parser.error(f"--hostile-kinds: choose from {', '.join(HOSTILE_KINDS)}")
    config = SoakConfig(
        records=args.records,
        keys=args.keys,
        partitions=args.partitions,
        hostile_share=args.hostile_share,
        hostile_kinds=kinds,
        seed=args.seed if args.seed is not None else random.randrange(1 << 31),
        duration_cap=args.duration_cap,
        stall_timeout=args.stall_timeout,
        produce_rate=args.produce_rate or None,
        fault_gap=(float(lo), float(hi or lo)),
        restart_restate=not args.no_restate_restart,
        kill_restart=(float(rlo), float(rhi or rlo)),
    )
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))  # kept: the logs are the evidence
    with contextlib.ExitStack() as stops:  # every stop runs, even when one of them fails
        try:
            broker = make_broker(args.broker, workdir / args.broker)
        except BrokerUnavailable as exc:
            raise SystemExit(str(exc)) from None
        stops.callback(broker.stop)
        broker.start()
        restate = RestateServer(workdir / "restate")
        stops.callback(restate.stop)
        restate.start()
        handlers = HandlerServer(workdir)
        stops.callback(handlers.stop)
        handlers.start()
        handlers.register_with(restate)
        outcome = asyncio.run(run_soak(broker, restate, workdir, config))
    print(report(outcome))
    argv = [sys.executable, "-m", "bench.soak", *sys.argv[1:]]
    if args.seed is None:
        argv += ["--seed", str(config.seed)]
    print(f"command: {shlex.join(argv)}")
    raise SystemExit(1 if outcome.failures else 0)


if __name__ == "__main__":
    main()
