"""End-to-end records/s: the bridge next to a bare aiohttp ceiling and Restate's Kafka subscription.

    .venv/bin/python -m bench.bridge [--records 4000] [--keys 200] [--partitions 4]
        [--broker tansu|apache-kafka] [--max-in-flight N] [--max-connections N] [--profile FILE]
        [--no-idempotency-key] [--order ceiling,bridge,subscription]

Starts its own stack (broker, Restate with the broker as ``[[ingress.kafka-clusters]]``, handlers),
produces ``--records`` JSON records over ``--keys`` object keys to two topics, then, one after the
other against the same broker and Restate, makes every record a ``Recorder/record`` invocation:

- ceiling: bare aiohttp in this process, one task per key sending its records in order, as many
  connections as the bridge's pool, an idempotency key per record as the bridge sends;
- bridge: ``python -m bridge run`` as a subprocess (route: object ``Recorder``, key ``{key}``);
- subscription: Restate's own Kafka subscription reading the second topic.

Each contender has its own object-key prefix (``c-``, ``b-``, ``s-``). Throughput is counted by
Restate itself: completed ``Recorder/record`` invocations of the prefix in ``sys_invocation``
(polled once a second: each poll scans the table, tens of ms of Restate CPU);
steady state is (N - 1) over first to last ``completed_at``, total is N over start to the last
``completed_at`` (start: first send, bridge spawn, subscription POST). CPU is utime + stime from
``/proc``: the bridge process from ready (``/readyz``) to the last completion, the ceiling's event
loop thread over its sends; ``Restate+handlers`` is each server's process group over the same
window. The machine is shared by every process here: on 2 cores the servers' CPU bounds them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import orjson

from tests.stack.bridge_process import BridgeProcess, routes_toml
from tests.stack.brokers import Broker, BrokerUnavailable, make_broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.procs import Process
from tests.stack.restate import KafkaCluster, RestateServer
from tests.stack.services import HandlerServer

CLUSTER = "bench"
BRIDGE_TOPIC = "bench-bridge"
SUBSCRIPTION_TOPIC = "bench-subscription"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = "bridge >= 0.9 x ceiling, >= 4 x subscription, CPU <= 0.3 ms/record"


@dataclass
class Result:
    name: str
    records: int
    steady_s: float
    total_s: float
    cpu_ms: float | None = None
    """The contender's own CPU ms per record (None: it runs inside Restate)."""
    server_cpu_ms: tuple[float, ...] = ()
    """Restate's and the handlers' CPU ms per record over the contender's run."""

    @property
    def steady_rate(self) -> float:
        return (self.records - 1) / self.steady_s if self.steady_s > 0 else float("nan")

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
    """Completed ``Recorder/record`` invocations of one key prefix, as Restate reports them."""

    def __init__(self, restate: RestateServer, prefix: str) -> None:
        self.restate = restate
        self.sql = (
            "select count(*) as n, min(completed_at) as first, max(completed_at) as last "
            "from sys_invocation where target_service_name = 'Recorder' "
            f"and target_handler_name = 'record' and target_service_key like '{prefix}%' "
            "and status = 'completed'"
        )

    def poll(self) -> tuple[int, float | None, float | None]:
        (row,) = self.restate.query(self.sql)
        if not row["n"]:
            return 0, None, None
        return int(row["n"]), _ts(row["first"]), _ts(row["last"])

    def wait(
        self, expect: int, timeout: float, on_tick: Callable[[], None] | None = None
    ) -> tuple[float, float]:
        """Poll until ``expect`` completed; (first, last) ``completed_at`` as epoch seconds."""
        deadline = time.monotonic() + timeout
        while True:
            n, first, last = self.poll()
            if n >= expect and first is not None and last is not None:
                return first, last
            if on_tick is not None:
                on_tick()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n}/{expect} invocations completed after {timeout:.0f}s")
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
    """Per-key ordered ``/send`` calls; (wall start as epoch, CPU seconds of this thread)."""
    by_key: dict[str, list[tuple[int, bytes]]] = {}
    for i, (key, value) in enumerate(data):
        by_key.setdefault(key, []).append((i, value))
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(
        connector=connector, skip_auto_headers=("User-Agent", "Content-Type")
    ) as session:

        async def lane(key: str, items: list[tuple[int, bytes]]) -> None:
            url = f"{ingress}/Recorder/c-{key}/record/send"
            for i, value in items:
                headers = {"Content-Type": "application/json"}
                if idempotency:
                    headers["idempotency-key"] = f"ceiling-0-{i}:Recorder.record"
                while True:
                    async with session.post(url, data=value, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 202:
                            break
                    await asyncio.sleep(0.1)

        start, cpu0 = time.time(), time.thread_time()
        await asyncio.gather(*(lane(k, v) for k, v in by_key.items()))
        return start, time.thread_time() - cpu0


def run_ceiling(
    restate: RestateServer, server: list[Process], data: list[tuple[str, bytes]], args: Namespace
) -> Result:
    cpu0 = server_cpu(server)
    start, cpu = asyncio.run(
        _ceiling_sends(restate.ingress_url, data, args.max_connections, not args.no_idempotency_key)
    )
    first, last = Completions(restate, "c-").wait(len(data), args.timeout)
    n = len(data)
    server_ms = per_record_ms(cpu0, server_cpu(server), n)
    return Result("ceiling (aiohttp)", n, last - first, last - start, cpu * 1000 / n, server_ms)


def run_bridge(
    workdir: Path,
    broker: Broker,
    restate: RestateServer,
    server: list[Process],
    n: int,
    args: Namespace,
) -> Result:
    bridge = BridgeProcess(workdir, "bridge")
    delivery = []
    if args.max_in_flight:
        delivery.append(f"max_in_flight = {args.max_in_flight}")
    text = routes_toml(
        bootstrap=broker.bootstrap_servers,
        ingress_url=restate.ingress_url,
        group_id="bench-bridge",
        metrics_port=bridge.metrics_port,
        routes=f"""
[[routes]]
topic = "{BRIDGE_TOPIC}"
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
{'idempotency_key = "none"' if args.no_idempotency_key else ""}
""",
        delivery="\n".join(delivery),
    )
    text = text.replace("[restate]\n", f"[restate]\nmax_connections = {args.max_connections}\n", 1)
    bridge.write_routes(text)
    if args.profile:
        argv = bridge.process.argv
        bridge.process.argv = [argv[0], "-m", "cProfile", "-o", str(args.profile), *argv[1:]]
    completions = Completions(restate, "b-")
    try:
        start = time.time()
        bridge.start(wait_ready=False)
        bridge.process.wait_until(bridge.ready, 60, "ready (/readyz)")
        ready, ready_cpu = time.time(), group_cpu_seconds(bridge.process.pid)
        server0 = server_cpu(server)
        first, last = completions.wait(n, args.timeout, on_tick=_alive(bridge.process))
        done_cpu, server1 = group_cpu_seconds(bridge.process.pid), server_cpu(server)
        idle0 = time.monotonic()
        time.sleep(1.0)
        idle = (group_cpu_seconds(bridge.process.pid) - done_cpu) / (time.monotonic() - idle0)
        print(
            f"bridge: spawn to ready {ready - start:.2f} s (CPU {ready_cpu * 1000:.0f} ms), "
            f"ready to first completion {first - ready:.2f} s; idle after the run "
            f"{idle * 1000:.0f} ms CPU/s"
        )
    finally:
        bridge.process.stop(timeout=30)
    cpu_ms, server_ms = (done_cpu - ready_cpu) * 1000 / n, per_record_ms(server0, server1, n)
    return Result("bridge", n, last - first, last - start, cpu_ms, server_ms)


def run_subscription(
    restate: RestateServer, server: list[Process], n: int, args: Namespace
) -> Result:
    cpu0 = server_cpu(server)
    start = time.time()
    restate.admin(
        "POST",
        "/subscriptions",
        {
            "source": f"kafka://{CLUSTER}/{SUBSCRIPTION_TOPIC}",
            "sink": "service://Recorder/record",
            "options": {"auto.offset.reset": "earliest", "session.timeout.ms": "6000"},
        },
    )
    first, last = Completions(restate, "s-").wait(n, args.timeout)
    print(f"subscription: POST to first completion {first - start:.2f} s")
    server_ms = per_record_ms(cpu0, server_cpu(server), n)
    return Result("subscription (Restate)", n, last - first, last - start, None, server_ms)


def _alive(proc: Process) -> Callable[[], None]:
    def check() -> None:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; log {proc.log_path}:\n{proc.log_tail()}")

    return check


# -- the run -------------------------------------------------------------------------------------


class Namespace(argparse.Namespace):
    records: int
    keys: int
    partitions: int
    broker: str
    max_in_flight: int | None
    max_connections: int
    profile: Path | None
    no_idempotency_key: bool
    order: str
    timeout: float


async def fill_topics(bootstrap: str, data: list[tuple[str, bytes]], partitions: int) -> None:
    await create_topics(bootstrap, [BRIDGE_TOPIC, SUBSCRIPTION_TOPIC], partitions)
    for topic, prefix in ((BRIDGE_TOPIC, "b-"), (SUBSCRIPTION_TOPIC, "s-")):
        await produce(bootstrap, topic, (Message(f"{prefix}{k}".encode(), v) for k, v in data))


async def warm_up(ingress: str) -> None:
    """A few invocations so that Restate has its deployment connections before the first run."""
    async with aiohttp.ClientSession() as session:
        for i in range(20):
            url = f"{ingress}/Recorder/w-k{i % 4}/record/send"
            async with session.post(
                url, data=b"0", headers={"content-type": "application/json"}
            ) as resp:
                await resp.read()


def report(results: list[Result], args: Namespace) -> None:
    print()
    print(
        f"{args.records} records, {args.keys} keys, {args.partitions} partitions, broker "
        f"{args.broker}; completed Recorder/record invocations counted in sys_invocation"
    )
    print(
        f"{'contender':<24}{'records':>8}{'steady s':>10}{'steady/s':>10}{'total s':>9}"
        f"{'total/s':>9}{'CPU ms/rec':>12}{'Restate+handlers ms/rec':>25}"
    )
    for r in results:
        cpu = "-" if r.cpu_ms is None else f"{r.cpu_ms:.3f}"
        srv = "+".join(f"{ms:.2f}" for ms in r.server_cpu_ms)
        print(
            f"{r.name:<24}{r.records:>8}{r.steady_s:>10.2f}{r.steady_rate:>10.0f}"
            f"{r.total_s:>9.2f}{r.total_rate:>9.0f}{cpu:>12}{srv:>25}"
        )
    by_name = {r.name.split()[0]: r for r in results}
    bridge, ceiling, sub = by_name["bridge"], by_name["ceiling"], by_name["subscription"]
    print(
        f"bridge / ceiling:      steady {bridge.steady_rate / ceiling.steady_rate:.2f}x, "
        f"total {bridge.total_rate / ceiling.total_rate:.2f}x   (target >= 0.9x)"
    )
    print(
        f"bridge / subscription: steady {bridge.steady_rate / sub.steady_rate:.2f}x, "
        f"total {bridge.total_rate / sub.total_rate:.2f}x   (target >= 4x)"
    )
    print(f"bridge CPU: {bridge.cpu_ms:.3f} ms/record   (target <= 0.3)")
    print(f"targets: {TARGETS}; steady = first to last completion, total = from start")
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
        "--no-idempotency-key",
        action="store_true",
        help="bridge and ceiling send without idempotency keys, as the subscription does",
    )
    parser.add_argument(
        "--order", default="ceiling,bridge,subscription", help="the contenders, in run order"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per contender")
    args = parser.parse_args(namespace=Namespace())
    if sorted(args.order.split(",")) != ["bridge", "ceiling", "subscription"]:
        parser.error("--order must name ceiling, bridge and subscription once each")
    data = records(args.records, args.keys)
    with (
        tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp,
        contextlib.ExitStack() as stops,  # every stop runs, even when one of them fails
    ):
        workdir = Path(tmp)
        try:
            broker = make_broker(args.broker, workdir / args.broker)
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
        asyncio.run(fill_topics(broker.bootstrap_servers, data, args.partitions))
        asyncio.run(warm_up(restate.ingress_url))
        assert restate.process is not None
        assert handlers.process is not None
        server = [restate.process, handlers.process]
        runs: dict[str, Callable[[], Result]] = {
            "ceiling": lambda: run_ceiling(restate, server, data, args),
            "bridge": lambda: run_bridge(workdir, broker, restate, server, len(data), args),
            "subscription": lambda: run_subscription(restate, server, len(data), args),
        }
        results = {name: runs[name]() for name in args.order.split(",")}
        report([results[name] for name in runs], args)
        poll = Completions(restate, "b-")
        cpu0, wall0 = server_cpu(server)[0], time.perf_counter()
        poll.poll()
        print(
            f"one completion poll (1/s while waiting): {(time.perf_counter() - wall0) * 1000:.0f}"
            f" ms wall, {(server_cpu(server)[0] - cpu0) * 1000:.0f} ms Restate CPU"
        )


if __name__ == "__main__":
    main()
