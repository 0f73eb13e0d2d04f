"""End-to-end records/s and latency: the bridge next to its ingress client alone and Restate's
Kafka subscription.

    .venv/bin/python -m bench.bridge [--records 4000] [--keys 200] [--partitions 4]
        [--broker tansu|apache-kafka] [--max-in-flight N] [--max-connections N]
        [--order ceiling,bridge,batched,subscription] [--batch "max_records = 100"]
        [--latency-rate 300] [--latency-records 3000] [--profile FILE] [--py-spy FILE]
        [--no-idempotency-key]

Starts its own stack (broker, Restate with the broker as ``[[ingress.kafka-clusters]]``, handlers),
produces ``--records`` JSON records over ``--keys`` object keys to one topic per Kafka contender,
then, one after the other against the same broker and Restate, makes every record a
``Recorder/record`` invocation (contenders in ``--order``):

- ceiling: the bridge's ingress client in this process, without Kafka, on the bridge's default
  loop: one task per key sending its records in order, as many connections as the bridge's pool,
  an idempotency key per record as the bridge sends;
- bridge: ``python -m bridge run`` as a subprocess (route: object ``Recorder``, key ``{key}``) on
  its default loop (uvloop when installed); ``bridge-asyncio``: the same with ``--loop asyncio``,
  for a side-by-side look at the event loop;
- baseline (with ``--baseline DIR``): the per-record bridge from another source tree, e.g. an
  older commit (``git archive COMMIT bridge | tar -x -C DIR``), for before/after in one run;
- batched: the same route with ``batch = { ... }`` (``--batch``): one invocation carries up to
  ``max_records`` records of one key as a JSON array. Checked first with ``restate-bridge
  check``: a bridge that refuses the option shows "n/a (batch routes not available)";
- subscription: Restate's own Kafka subscription reading its topic.

Each contender has its own object-key prefix. Throughput is counted by Restate itself: completed
``Recorder/record`` invocations of the prefix in ``sys_invocation`` (polled once a second: each
poll scans the table, tens of ms of Restate CPU); steady state is (N - 1) records over first to
last ``completed_at`` (batched: N records over first to last completion of its invocations), total
is N over start to the last ``completed_at`` (start: first send, bridge spawn, subscription POST).
A bridge starts on its empty topic and its records are produced once it is ready, the
subscription's before it starts. CPU is utime + stime from ``/proc``: the bridge process from
ready (``/readyz``, just before its records are produced) to the last completion, the
ceiling's event loop thread over its sends; ``Restate+handlers`` is each server's process group
over the same window. The machine is shared by every process here: on 2 cores the servers' CPU
bounds them all.

Latency (``--latency-rate`` records/s, 0 to skip): for each Kafka contender, a consumer already
running and caught up, ``--latency-records`` records produced at that steady rate (paced, one
producer send at a time, ``linger_ms=0``), each to its own object key; measured per record is the
record's Kafka timestamp (CreateTime, set by the producer just before the send, ms) to the
``created_at`` Restate stores for the invocation it became (ms). For the bridge that is Restate
accepting its ``/send`` (just before the 202), for the subscription Restate creating the
invocation from the record it read: the same point in both, on the same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from bench.profile import PySpy, print_summary
from bridge.cli import loop_factory
from bridge.ingress import Client, IngressError
from tests.stack.bridge_process import REPO_ROOT, BridgeProcess, routes_toml
from tests.stack.brokers import Broker, BrokerUnavailable, make_broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.procs import Process
from tests.stack.restate import KafkaCluster, RestateServer
from tests.stack.services import HandlerServer

CLUSTER = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KAFKA_CONTENDERS = ("baseline", "bridge", "bridge-asyncio", "batched", "subscription")
CONTENDERS = ("ceiling", *KAFKA_CONTENDERS)
PREFIX = {
    "ceiling": "c-",
    "baseline": "o-",
    "bridge": "b-",
    "bridge-asyncio": "a-",
    "batched": "t-",
    "subscription": "s-",
}
LABEL = {
    "ceiling": "ceiling (ingress client)",
    "baseline": "baseline bridge",
    "bridge": "bridge, per record",
    "bridge-asyncio": "bridge, asyncio loop",
    "batched": "bridge, batched",
    "subscription": "subscription (Restate)",
}
TARGETS = (
    "per-record bridge >= 0.9 x subscription and CPU <= 0.10 ms/record; batched >= 5 x subscription"
)
BATCH_UNAVAILABLE = "n/a (batch routes not available)"


def topic_of(name: str, phase: str = "bench") -> str:
    return f"{phase}-{name}"


@dataclass
class Result:
    name: str
    records: int
    steady_s: float = float("nan")
    total_s: float = float("nan")
    cpu_ms: float | None = None
    """The contender's own CPU ms per record (None: it runs inside Restate)."""
    server_cpu_ms: tuple[float, ...] = ()
    """Restate's and the handlers' CPU ms per record over the contender's run."""
    invocations: int | None = None
    note: str | None = None
    """Why there is no figure (the contender could not run)."""
    latency_ms: tuple[float, float] | None = None
    """p50, p99 record timestamp -> invocation created_at (the latency phase)."""

    @property
    def steady_rate(self) -> float:
        n = self.records if self.invocations is not None else self.records - 1
        return n / self.steady_s if self.steady_s > 0 else float("nan")

    @property
    def total_rate(self) -> float:
        return self.records / self.total_s if self.total_s > 0 else float("nan")


# -- measuring -----------------------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid`` (children reaped excluded)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime stime
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def server_cpu(procs: list[Process]) -> tuple[float, ...]:
    """CPU seconds of each server process group (Restate, handlers)."""
    return tuple(group_cpu_seconds(p.pid) for p in procs)


def per_record_ms(before: tuple[float, ...], after: tuple[float, ...], n: int) -> tuple[float, ...]:
    return tuple((b - a) * 1000 / n for a, b in zip(before, after, strict=True))


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class Completions:
    """``Recorder/record`` invocations of one key prefix, as Restate reports them."""

    def __init__(self, restate: RestateServer, prefix: str) -> None:
        self.restate = restate
        self.sql = (
            "select count(*) as n, sum(case when status = 'completed' then 1 else 0 end) as done, "
            "min(completed_at) as first, max(completed_at) as last "
            "from sys_invocation where target_service_name = 'Recorder' "
            f"and target_handler_name = 'record' and target_service_key like '{prefix}%'"
        )

    def poll(self) -> tuple[int, int, float | None, float | None]:
        """(invocations, of them completed, first and last ``completed_at``)."""
        (row,) = self.restate.query(self.sql)
        if not row["n"]:
            return 0, 0, None, None
        first = _ts(row["first"]) if row.get("first") else None
        last = _ts(row["last"]) if row.get("last") else None
        return int(row["n"]), int(row.get("done") or 0), first, last

    def wait(
        self,
        expect: int | Callable[[], bool],
        timeout: float,
        on_tick: Callable[[], None] | None = None,
    ) -> tuple[float, float, int]:
        """Poll until ``expect`` invocations completed (or, a callable, until it says every
        record was sent and each invocation so far completed); (first, last ``completed_at`` as
        epoch seconds, invocations)."""
        deadline = time.monotonic() + timeout
        while True:
            n, done, first, last = self.poll()
            if first is not None and last is not None:
                if isinstance(expect, int) and done >= expect:
                    return first, last, done
                if callable(expect) and done == n and expect() and self.poll()[:2] == (n, n):
                    return first, last, n
            if on_tick is not None:
                on_tick()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done} invocations completed after {timeout:.0f}s")
            time.sleep(1.0)  # a poll scans sys_invocation: tens of ms of Restate CPU


def records(n: int, keys: int) -> list[tuple[str, bytes]]:
    """(key suffix, JSON value) pairs: record ``i`` goes to key ``k{i % keys}``."""
    out = []
    for i in range(n):
        key = f"k{i % keys}"
        value = {"seq": i, "key": key, "amount": i % 977, "note": "bench record " + "x" * 48}
        out.append((key, orjson.dumps(value)))
    return out


# -- contenders ----------------------------------------------------------------------------------


async def _ceiling_sends(
    ingress: str, data: list[tuple[str, bytes]], connections: int, idempotency: bool
) -> tuple[float, float]:
    """Per-key ordered ``/send`` calls through the bridge's own ingress client, without Kafka;
    (wall start as epoch, CPU seconds of this thread)."""
    by_key: dict[str, list[tuple[int, bytes]]] = {}
    for i, (key, value) in enumerate(data):
        by_key.setdefault(key, []).append((i, value))
    async with Client(ingress, max_connections=connections) as client:

        async def lane(key: str, items: list[tuple[int, bytes]]) -> None:
            target = client.object("Recorder", f"c-{key}", "record")
            for i, value in items:
                idem = f"ceiling-0-{i}:Recorder.record" if idempotency else None
                while True:
                    try:
                        await target.send(
                            value, content_type="application/json", idempotency_key=idem
                        )
                        break
                    except IngressError as exc:
                        if not exc.retryable:
                            raise
                        await asyncio.sleep(0.1)

        start, cpu0 = time.time(), time.thread_time()
        await asyncio.gather(*(lane(k, v) for k, v in by_key.items()))
        return start, time.thread_time() - cpu0


def run_ceiling(stack: Stack, data: list[tuple[str, bytes]], args: Namespace) -> Result:
    cpu0 = server_cpu(stack.server)
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:  # the bridge's loop
        start, cpu = runner.run(
            _ceiling_sends(
                stack.restate.ingress_url, data, args.max_connections, not args.no_idempotency_key
            )
        )
    first, last, _ = Completions(stack.restate, "c-").wait(len(data), args.timeout)
    n = len(data)
    server_ms = per_record_ms(cpu0, server_cpu(stack.server), n)
    return Result(LABEL["ceiling"], n, last - first, last - start, cpu * 1000 / n, server_ms)


def bridge_process(
    stack: Stack, name: str, topic: str, group: str, args: Namespace, *, batch: str | None = None
) -> BridgeProcess:
    """A bridge (not started) routing ``topic`` to ``Recorder/record`` keyed by the record key."""
    bridge = BridgeProcess(stack.workdir, name)
    delivery = []
    if args.max_in_flight:
        delivery.append(f"max_in_flight = {args.max_in_flight}")
    text = routes_toml(
        bootstrap=stack.broker.bootstrap_servers,
        ingress_url=stack.restate.ingress_url,
        group_id=group,
        metrics_port=bridge.metrics_port,
        routes=f"""
[[routes]]
topic = "{topic}"
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
{'idempotency_key = "none"' if args.no_idempotency_key else ""}
{f"batch = {{ {batch} }}" if batch is not None else ""}
""",
        delivery="\n".join(delivery),
    )
    text = text.replace("[restate]\n", f"[restate]\nmax_connections = {args.max_connections}\n", 1)
    bridge.write_routes(text)
    if "asyncio" in name:
        bridge.process.argv = [*bridge.process.argv, "--loop", "asyncio"]
    if name.startswith("baseline"):
        bridge.process.cwd = args.baseline  # python -m bridge finds that tree's package first
    return bridge


def spy_file(base: Path, name: str) -> Path:
    """Where the py-spy samples of contender ``name`` go: ``base`` with the name added."""
    return base.with_name(f"{base.stem}-{name}{base.suffix or '.raw'}")


def batch_refusal(bridge: BridgeProcess) -> str | None:
    """What ``restate-bridge check`` says about the routes file, when it refuses it."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check", str(bridge.routes_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    return None if done.returncode == 0 else (done.stdout + done.stderr).strip()


def accepted(bridge: BridgeProcess) -> float:
    return bridge.value("restate_bridge_messages_total", outcome="accepted") + bridge.value(
        "restate_bridge_messages_total", outcome="duplicate"
    )


def run_bridge(stack: Stack, name: str, data: list[tuple[str, bytes]], args: Namespace) -> Result:
    """The bridge starts on its empty topic; once it is ready, the records are produced to it
    (under a second for 4,000): its CPU is counted from then, so that start-up (imports, the
    group join) is not in it and no record is handled before the count starts."""
    batched, n = name == "batched", len(data)
    bridge = bridge_process(
        stack, name, topic_of(name), f"bench-{name}", args, batch=args.batch if batched else None
    )
    if batched and (refusal := batch_refusal(bridge)) is not None:
        print(f"{name}: restate-bridge check refused the batch option:\n{refusal}")
        return Result(LABEL[name], n, note=BATCH_UNAVAILABLE)
    if args.profile and name == "bridge":
        argv = bridge.process.argv
        bridge.process.argv = [argv[0], "-m", "cProfile", "-o", str(args.profile), *argv[1:]]
    completions = Completions(stack.restate, PREFIX[name])
    expect: int | Callable[[], bool] = (lambda: accepted(bridge) >= n) if batched else n
    try:
        start = time.time()
        bridge.start(wait_ready=False)
        bridge.process.wait_until(bridge.ready, 60, "ready (/readyz)")
        spy = None
        if args.py_spy and not batched:
            spy = PySpy(bridge.process.pid, spy_file(args.py_spy, name))
        ready, ready_cpu = time.time(), group_cpu_seconds(bridge.process.pid)
        server0 = server_cpu(stack.server)
        prefix = PREFIX[name]
        messages = (Message(f"{prefix}{k}".encode(), v) for k, v in data)
        asyncio.run(produce(stack.broker.bootstrap_servers, topic_of(name), messages))
        first, last, invocations = completions.wait(
            expect, args.timeout, on_tick=alive_check(bridge.process)
        )
        done_cpu, server1 = group_cpu_seconds(bridge.process.pid), server_cpu(stack.server)
        if spy is not None:
            spy.stop()
        idle0 = time.monotonic()
        time.sleep(1.0)
        idle = (group_cpu_seconds(bridge.process.pid) - done_cpu) / (time.monotonic() - idle0)
        print(
            f"{name}: spawn to ready {ready - start:.2f} s (CPU {ready_cpu * 1000:.0f} ms), "
            f"ready to first completion {first - ready:.2f} s; idle after the run "
            f"{idle * 1000:.0f} ms CPU/s; {invocations} invocations"
        )
    finally:
        bridge.process.stop(timeout=30)
    cpu_ms, server_ms = (done_cpu - ready_cpu) * 1000 / n, per_record_ms(server0, server1, n)
    return Result(
        LABEL[name],
        n,
        last - first,
        last - start,
        cpu_ms,
        server_ms,
        invocations=invocations if batched else None,
    )


def subscribe(stack: Stack, topic: str) -> None:
    stack.restate.admin(
        "POST",
        "/subscriptions",
        {
            "source": f"kafka://{CLUSTER}/{topic}",
            "sink": "service://Recorder/record",
            "options": {"auto.offset.reset": "earliest", "session.timeout.ms": "6000"},
        },
    )


def run_subscription(stack: Stack, n: int, args: Namespace) -> Result:
    cpu0 = server_cpu(stack.server)
    start = time.time()
    subscribe(stack, topic_of("subscription"))
    first, last, _ = Completions(stack.restate, "s-").wait(n, args.timeout)
    print(f"subscription: POST to first completion {first - start:.2f} s")
    server_ms = per_record_ms(cpu0, server_cpu(stack.server), n)
    return Result(LABEL["subscription"], n, last - first, last - start, None, server_ms)


def alive_check(proc: Process) -> Callable[[], None]:
    def check() -> None:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; log {proc.log_path}:\n{proc.log_tail()}")

    return check


# -- latency at a steady rate --------------------------------------------------------------------


async def paced_produce(
    bootstrap: str, topic: str, prefix: str, count: int, rate: float
) -> dict[str, int]:
    """``count`` records at ``rate``/s, key ``{prefix}{i}``; each key's timestamp (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    stamps: dict[str, int] = {}
    try:
        futures = []
        t0 = time.monotonic()
        for i in range(count):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"{prefix}{i}"
            stamp = int(time.time() * 1000)
            stamps[key] = stamp
            value = orjson.dumps({"seq": i, "note": "latency"})
            futures.append(await producer.send(topic, value, key=key.encode(), timestamp_ms=stamp))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return stamps


def created(restate: RestateServer, prefix: str) -> dict[str, float]:
    rows = restate.query(
        "select target_service_key as k, created_at as c from sys_invocation where "
        f"target_service_name = 'Recorder' and target_service_key like '{prefix}%'"
    )
    return {row["k"]: _ts(row["c"]) for row in rows}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_latency(stack: Stack, name: str, args: Namespace) -> tuple[float, float] | None:
    """p50 and p99 ms from record timestamp to invocation ``created_at``, or None (not run)."""
    topic, prefix = topic_of(name, "latency"), f"L{PREFIX[name]}"
    bootstrap = stack.broker.bootstrap_servers
    bridge = None
    if name == "subscription":
        subscribe(stack, topic)
    else:
        batch = args.batch if name == "batched" else None
        bridge = bridge_process(
            stack, f"{name}-latency", topic, f"latency-{name}", args, batch=batch
        )
        if batch is not None and batch_refusal(bridge) is not None:
            return None
        bridge.start()
    try:
        # the consumer is running and has joined: its first record arrived
        asyncio.run(paced_produce(bootstrap, topic, f"{prefix}w", 1, 1))
        deadline = time.monotonic() + 120
        while not created(stack.restate, f"{prefix}w"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: the warm-up record never became an invocation")
            time.sleep(0.5)
        stamps = asyncio.run(
            paced_produce(bootstrap, topic, f"{prefix}r", args.latency_records, args.latency_rate)
        )
        deadline = time.monotonic() + args.timeout
        while len(seen := created(stack.restate, f"{prefix}r")) < len(stamps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {len(seen)}/{len(stamps)} latency records arrived")
            time.sleep(1.0)
    finally:
        if bridge is not None:
            bridge.process.stop(timeout=30)
    ms = [(seen[k] * 1000 - stamp) for k, stamp in stamps.items()]
    print(
        f"{name}: latency over {len(ms)} records at {args.latency_rate:g}/s: "
        f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
        f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms"
    )
    return percentile(ms, 0.5), percentile(ms, 0.99)


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    workdir: Path
    broker: Broker
    restate: RestateServer
    handlers: HandlerServer

    @property
    def server(self) -> list[Process]:
        assert self.restate.process is not None
        assert self.handlers.process is not None
        return [self.restate.process, self.handlers.process]


def open_stack(broker_name: str, workdir: Path, stops: contextlib.ExitStack) -> Stack:
    """Broker, Restate (with the broker as a Kafka cluster) and the test handlers, registered
    and warmed up; each stopped by ``stops``."""
    try:
        broker = make_broker(broker_name, workdir / broker_name)
    except BrokerUnavailable as exc:
        raise SystemExit(str(exc)) from None
    stops.callback(broker.stop)
    broker.start()
    restate = RestateServer(
        workdir / "restate", kafka=KafkaCluster(CLUSTER, broker.bootstrap_servers)
    )
    stops.callback(restate.stop)
    restate.start()
    handlers = HandlerServer(workdir)
    stops.callback(handlers.stop)
    handlers.start()
    handlers.register_with(restate)
    asyncio.run(warm_up(restate.ingress_url))
    return Stack(workdir, broker, restate, handlers)


# -- the run -------------------------------------------------------------------------------------


class Namespace(argparse.Namespace):
    records: int
    keys: int
    partitions: int
    broker: str
    max_in_flight: int | None
    max_connections: int
    profile: Path | None
    py_spy: Path | None
    no_idempotency_key: bool
    order: str
    batch: str
    baseline: Path | None
    latency_rate: float
    latency_records: int
    timeout: float


async def fill_topics(
    bootstrap: str, data: list[tuple[str, bytes]], partitions: int, names: list[str]
) -> None:
    topics = [topic_of(n) for n in names if n != "ceiling"]
    topics += [topic_of(n, "latency") for n in names if n != "ceiling"]
    await create_topics(bootstrap, topics, partitions)
    for name in names:
        if name == "subscription":  # a bridge's records are produced once it is ready
            prefix = PREFIX[name]
            messages = (Message(f"{prefix}{k}".encode(), v) for k, v in data)
            await produce(bootstrap, topic_of(name), messages)


async def warm_up(ingress: str) -> None:
    """A few invocations so that Restate has its deployment connections before the first run."""
    async with Client(ingress) as client:
        for i in range(20):
            await client.object("Recorder", f"w-k{i % 4}", "record").send(0)


def _latency(r: Result) -> str:
    if r.latency_ms is None:
        return "-"
    return f"{r.latency_ms[0]:.0f} / {r.latency_ms[1]:.0f}"


def report(results: list[Result], args: Namespace) -> None:
    print()
    print(
        f"broker {args.broker}: {args.records} records, {args.keys} keys, {args.partitions} "
        "partitions; completed Recorder/record invocations counted in sys_invocation"
    )
    sub = next((r for r in results if r.name == LABEL["subscription"] and not r.note), None)
    print(
        f"{'contender':<24}{'steady rec/s':>13}{'x subscr.':>10}{'total s':>9}"
        f"{'CPU ms/rec':>11}{'Restate+handlers ms/rec':>25}{'latency p50/p99 ms':>20}"
    )
    for r in results:
        if r.note:
            print(f"{r.name:<24}  {r.note}")
            continue
        ratio = f"{r.steady_rate / sub.steady_rate:.2f}x" if sub is not None else "-"
        cpu = "-" if r.cpu_ms is None else f"{r.cpu_ms:.3f}"
        srv = "+".join(f"{ms:.2f}" for ms in r.server_cpu_ms)
        print(
            f"{r.name:<24}{r.steady_rate:>13.0f}{ratio:>10}{r.total_s:>9.2f}{cpu:>11}{srv:>25}"
            f"{_latency(r):>20}"
        )
        if r.invocations:
            each = r.records / r.invocations
            print(f"{'':<24}  {r.invocations} invocations, {each:.1f} records each")
    print(f"targets: {TARGETS}")
    print(
        "steady = first to last completion; total = from start; latency = record timestamp to "
        f"invocation created_at at {args.latency_rate:g} records/s"
    )
    print(f"command: {shlex.join([sys.executable, '-m', 'bench.bridge', *sys.argv[1:]])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", choices=["tansu", "apache-kafka"], default="tansu")
    parser.add_argument(
        "--max-in-flight", type=int, default=None, help="bridge [delivery] max_in_flight"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=128,
        help="bridge [restate] max_connections, and the ceiling's connection limit",
    )
    parser.add_argument("--profile", type=Path, help="run the bridge under cProfile, write here")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="sample each per-record bridge with py-spy from ready to the last completion (raw "
        "format, FILE-<contender>.raw) and print where its CPU goes",
    )
    parser.add_argument(
        "--no-idempotency-key",
        action="store_true",
        help="bridge and ceiling send without idempotency keys, as the subscription does",
    )
    parser.add_argument(
        "--order",
        default="ceiling,bridge,batched,subscription",
        help=f"the contenders, in run order: some of {', '.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--batch",
        default='max_records = 100, max_bytes = "1MiB", max_wait = "50ms"',
        help="the batched contender's batch = { ... } table",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the baseline contender's source tree (a directory holding a bridge/ package)",
    )
    parser.add_argument(
        "--latency-rate", type=float, default=300, help="records/s of the latency phase; 0: skip"
    )
    parser.add_argument("--latency-records", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per contender")
    args = parser.parse_args(namespace=Namespace())
    order = args.order.split(",")
    if len(set(order)) != len(order) or not set(order) <= set(CONTENDERS):
        parser.error(f"--order names some of {', '.join(CONTENDERS)}, each once")
    if "baseline" in order and args.baseline is None:
        parser.error("the baseline contender needs --baseline DIR")
    data = records(args.records, args.keys)
    with (
        tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp,
        contextlib.ExitStack() as stops,  # every stop runs, even when one of them fails
    ):
        stack = open_stack(args.broker, Path(tmp), stops)
        asyncio.run(fill_topics(stack.broker.bootstrap_servers, data, args.partitions, order))
        runs: dict[str, Callable[[], Result]] = {
            "ceiling": lambda: run_ceiling(stack, data, args),
            "baseline": lambda: run_bridge(stack, "baseline", data, args),
            "bridge": lambda: run_bridge(stack, "bridge", data, args),
            "bridge-asyncio": lambda: run_bridge(stack, "bridge-asyncio", data, args),
            "batched": lambda: run_bridge(stack, "batched", data, args),
            "subscription": lambda: run_subscription(stack, len(data), args),
        }
        results = {name: runs[name]() for name in order}
        if args.latency_rate > 0:
            for name in order:
                if name != "ceiling" and not results[name].note:
                    results[name].latency_ms = run_latency(stack, name, args)
        report([results[name] for name in CONTENDERS if name in results], args)
        if args.py_spy:
            for name in order:
                if (path := spy_file(args.py_spy, name)).exists():
                    print(f"-- {name}")
                    print_summary(path)


if __name__ == "__main__":
    main()
