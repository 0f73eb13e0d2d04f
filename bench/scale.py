"""Scale-out: 1, 2, 3 bridge replicas in one consumer group on a 12-partition topic.

    .venv/bin/python -m bench.scale [--replicas 1,2,3] [--records 6000] [--keys 300]
        [--partitions 12] [--broker tansu|apache-kafka] [--batch "max_records = 100"]

Starts its own stack (as ``bench.bridge`` does). For each replica count a topic of its own holds
``--records`` JSON records over ``--keys`` object keys (``bench.bridge``'s records); that many
bridge processes start together in one group (route: object ``Recorder/record`` keyed by the
record key, or a batch route with ``--batch``), and the run is timed from the first to the last
completion Restate reports (``sys_invocation``), as in ``bench.bridge``. Alongside: the bridges'
CPU (all replicas) and Restate's and the handlers' CPU per record, and how many of the machine's
cores each kept busy over the run (``os.cpu_count()`` cores in all): when Restate and the
handlers use most of them, adding replicas cannot help.
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
from pathlib import Path

from bench.bridge import (
    Completions,
    Namespace,
    accepted,
    alive_check,
    bridge_process,
    group_cpu_seconds,
    open_stack,
    records,
    server_cpu,
)
from tests.stack.bridge_process import BridgeProcess
from tests.stack.kafka_io import Message, create_topics, produce


async def fill(
    bootstrap: str, counts: list[int], data: list[tuple[str, bytes]], parts: int
) -> None:
    await create_topics(bootstrap, [f"scale-{k}" for k in counts], parts)
    for k in counts:
        messages = (Message(f"r{k}-{key}".encode(), v) for key, v in data)
        await produce(bootstrap, f"scale-{k}", messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--broker", choices=["tansu", "apache-kafka"], default="tansu")
    parser.add_argument("--batch", help="a batch route: the batch = { ... } table")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(namespace=Namespace())
    args.max_in_flight, args.max_connections, args.no_idempotency_key = None, 128, False
    counts = [int(k) for k in args.replicas.split(",")]
    n, cores = args.records, os.cpu_count() or 1
    data = records(n, args.keys)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        contextlib.ExitStack() as stops,
    ):
        stack = open_stack(args.broker, Path(tmp), stops)
        asyncio.run(fill(stack.broker.bootstrap_servers, counts, data, args.partitions))
        for k in counts:
            bridges = [
                bridge_process(
                    stack, f"scale{k}-{i}", f"scale-{k}", f"scale-{k}", args, batch=args.batch
                )
                for i in range(k)
            ]
            try:
                start = time.time()
                for bridge in bridges:
                    bridge.start(wait_ready=False)
                for bridge in bridges:
                    bridge.process.wait_until(bridge.ready, 60, "ready (/readyz)")
                cpu0 = sum(group_cpu_seconds(b.process.pid) for b in bridges)
                server0, wall0 = server_cpu(stack.server), time.monotonic()

                def tick(bridges: list[BridgeProcess] = bridges) -> None:
                    for b in bridges:
                        alive_check(b.process)()

                if args.batch:
                    expect = lambda bs=bridges: sum(accepted(b) for b in bs) >= n  # noqa: E731
                    first, last, _ = Completions(stack.restate, f"r{k}-").wait(
                        expect, args.timeout, on_tick=tick
                    )
                else:
                    first, last, _ = Completions(stack.restate, f"r{k}-").wait(
                        n, args.timeout, on_tick=tick
                    )
                cpu = sum(group_cpu_seconds(b.process.pid) for b in bridges) - cpu0
                server1, wall = server_cpu(stack.server), time.monotonic() - wall0
            finally:
                for bridge in bridges:
                    bridge.process.stop(timeout=30)
            server = [b - a for a, b in zip(server0, server1, strict=True)]
            rows.append((k, n / (last - first), last - start, cpu, server, wall))
            print(f"{k} replica(s): {n / (last - first):.0f} records/s steady")
    print()
    print(
        f"broker {args.broker}: {n} records per run, {args.keys} keys, {args.partitions} "
        f"partitions, {'batch ' + args.batch if args.batch else 'per record'}; {cores} cores"
    )
    print(
        f"{'replicas':>8}{'steady rec/s':>14}{'total s':>9}{'bridges CPU ms/rec':>20}"
        f"{'Restate+handlers ms/rec':>25}{'cores busy: bridges / Restate / handlers':>44}"
    )
    for k, rate, total, cpu, server, wall in rows:
        srv = "+".join(f"{s * 1000 / n:.2f}" for s in server)
        busy = " / ".join(f"{c / wall:.2f}" for c in (cpu, *server))
        print(f"{k:>8}{rate:>14.0f}{total:>9.2f}{cpu * 1000 / n:>20.3f}{srv:>25}{busy:>44}")
    print(f"command: {shlex.join([sys.executable, '-m', 'bench.scale', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
