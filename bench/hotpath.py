"""The bridge's own CPU per record, without Restate: bridges side by side against a fake ingress.

    .venv/bin/python -m bench.hotpath [--records 20000] [--keys 200] [--partitions 4]
        [--broker tansu|apache-kafka] [--baseline DIR] [--asyncio] [--validate-input]
        [--rounds 3]

Restate and its handlers need about 1 ms of CPU per record, five times the bridge's, on the same
two cores: end to end (``bench.bridge``) the bridge's CPU per record moves with everything else
the machine does. Here the ingress is :mod:`bench.fake_ingress`, which accepts every ``/send`` at
once for a few microseconds of CPU. Per round and contender (the bridge of this tree; with
``--baseline DIR`` the bridge of that source tree, e.g. an older commit exported with
``git archive COMMIT bridge | tar -x -C DIR``; with ``--asyncio`` this tree's bridge on
``--loop asyncio``, where the bridge's default is uvloop when installed; with
``--validate-input`` this tree's bridge checking each record against a handler's input schema,
read from the fake ingress's admin API) a bridge starts on an
empty topic of its own (route: object ``Recorder``, key ``{key}``, an idempotency key per record,
as ``bench.bridge``), and once it is ready ``--records`` records are produced to the topic; its
CPU (utime + stime from ``/proc``) is taken from then until the fake ingress accepted them all.
Contenders alternate within each round, so drift in the machine's load reaches them alike; the
table gives each round and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bridge import alive_check, group_cpu_seconds, records
from bench.profile import PySpy, print_summary
from tests.stack.bridge_process import REPO_ROOT, BridgeProcess, routes_toml
from tests.stack.brokers import BrokerUnavailable, make_broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.procs import Process, free_port, port_open


def sends(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as resp:
        return int(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", choices=["tansu", "apache-kafka"], default="tansu")
    parser.add_argument("--baseline", type=Path, help="a source tree holding an older bridge/")
    parser.add_argument(
        "--asyncio", action="store_true", help="also this bridge on asyncio's own loop"
    )
    parser.add_argument(
        "--validate-input",
        action="store_true",
        help="also this bridge with validate_input = true (the schema: bench.fake_ingress)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--py-spy", type=Path, help="sample this tree's bridge in round 1 with py-spy, write here"
    )
    args = parser.parse_args()
    contenders = ["bridge"]
    if args.baseline:
        contenders.insert(0, "baseline")
    if args.asyncio:
        contenders.append("asyncio")
    if args.validate_input:
        contenders.append("validate")
    n = args.records
    data = records(n, args.keys)
    cpu: dict[str, list[float]] = {c: [] for c in contenders}
    rate: dict[str, list[float]] = {c: [] for c in contenders}
    with (
        tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp,
        contextlib.ExitStack() as stops,
    ):
        workdir = Path(tmp)
        try:
            broker = make_broker(args.broker, workdir / args.broker)
        except BrokerUnavailable as exc:
            raise SystemExit(str(exc)) from None
        stops.callback(broker.stop)
        broker.start()
        port = free_port()
        ingress = Process(
            "fake-ingress",
            [sys.executable, "-m", "bench.fake_ingress", str(port)],
            workdir / "fake-ingress.log",
            cwd=REPO_ROOT,
        )
        stops.callback(ingress.stop)
        ingress.start()
        ingress.wait_until(lambda: port_open(port), 30, "listening")
        bootstrap = broker.bootstrap_servers
        topics = [f"hot-{c}-{r}" for r in range(args.rounds) for c in contenders]
        asyncio.run(create_topics(bootstrap, topics, args.partitions))
        for r in range(args.rounds):
            for c in contenders:
                topic = f"hot-{c}-{r}"
                bridge = BridgeProcess(workdir, f"{c}-{r}")
                bridge.write_routes(
                    routes_toml(
                        bootstrap=bootstrap,
                        ingress_url=f"http://127.0.0.1:{port}",
                        group_id=topic,
                        metrics_port=bridge.metrics_port,
                        routes=f"""
[[routes]]
topic = "{topic}"
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
"""
                        + ("validate_input = true\n" if c == "validate" else ""),
                        restate_extra=(
                            f'admin_url = "http://127.0.0.1:{port}"\n' if c == "validate" else ""
                        ),
                    )
                )
                if c == "baseline":
                    bridge.process.cwd = args.baseline
                if c == "asyncio":
                    bridge.process.argv = [*bridge.process.argv, "--loop", "asyncio"]
                try:
                    bridge.start()
                    time.sleep(1.0)  # the group has settled; the bridge idles
                    pid, before = bridge.process.pid, sends(port)
                    spy = (
                        PySpy(pid, args.py_spy)
                        if args.py_spy and c == "bridge" and r == 0
                        else None
                    )
                    cpu0, t0 = group_cpu_seconds(pid), time.monotonic()
                    messages = (Message(k.encode(), v) for k, v in data)
                    asyncio.run(produce(bootstrap, topic, messages))
                    alive = alive_check(bridge.process)
                    while sends(port) - before < n:
                        alive()
                        if time.monotonic() - t0 > 300:
                            raise TimeoutError(f"{c}: {sends(port) - before}/{n} sends")
                        time.sleep(0.1)
                    wall = time.monotonic() - t0
                    if spy is not None:
                        spy.stop()
                    cpu[c].append((group_cpu_seconds(pid) - cpu0) * 1000 / n)
                    rate[c].append(n / wall)
                finally:
                    bridge.process.stop(timeout=30)
                print(f"round {r + 1} {c}: {cpu[c][-1]:.3f} ms/record, {rate[c][-1]:.0f} records/s")
    print()
    print(
        f"broker {args.broker}, fake ingress: {n} records per run, {args.keys} keys, "
        f"{args.partitions} partitions; bridge CPU ms/record (records/s, production included)"
    )
    rounds = "".join(f"{'round ' + str(r + 1):>18}" for r in range(args.rounds))
    print(f"{'contender':<12}{rounds}{'median':>10}")
    for c in contenders:
        cells = "".join(
            f"{f'{ms:.3f} ({rt:.0f}/s)':>18}" for ms, rt in zip(cpu[c], rate[c], strict=True)
        )
        print(f"{c:<12}{cells}{statistics.median(cpu[c]):>10.3f}")
    print(f"command: {shlex.join([sys.executable, '-m', 'bench.hotpath', *sys.argv[1:]])}")
    if args.py_spy:
        print_summary(args.py_spy)


if __name__ == "__main__":
    main()
