"""A backlog drained: the bridge's memory and its speed at the start and at the end.

    .venv/bin/python -m bench.memory [--records 1000000] [--keys 10000] [--partitions 4]
        [--broker tansu|apache-kafka] [--batch "max_records = 100"] [--timeout 3600]

Starts its own stack (as ``bench.bridge`` does), produces ``--records`` small JSON records
(``{"n": i}``, about 10 bytes) over ``--keys`` object keys, and only then starts one bridge, so
that the whole topic is a backlog. Per record the route sends to ``Recorder/key``, a shared
handler of the ``Recorder`` object that takes no input and keeps no state (``body = "none"``): the
handler's cost stays the same from the first record to the last, so a slowdown is the bridge's.
With ``--batch`` the route is a batch route to ``Recorder/record`` instead (it appends each batch
to the key's state; with many keys that stays small).

Every half second it reads the bridge's RSS (``VmRSS`` in ``/proc``) and its records accepted
(``restate_bridge_messages_total``, accepted + duplicate). It reports the peak RSS (and the
kernel's ``VmHWM``), and the records/s of the first and of the last tenth of the backlog: the time
between 0 and N/10 accepted, and between 9N/10 and N (counted from the bridge being ready).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.bridge import alive_check, group_cpu_seconds, open_stack, server_cpu
from tests.stack.bridge_process import BridgeProcess, routes_toml
from tests.stack.kafka_io import create_topics

TOPIC = "memory-backlog"
TARGET_RSS_MB = 150


async def fill(bootstrap: str, n: int, keys: int, partitions: int) -> None:
    await create_topics(bootstrap, [TOPIC], partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        pending = []
        for i in range(n):
            fut = await producer.send(TOPIC, b'{"n":%d}' % i, key=b"m-k%d" % (i % keys))
            pending.append(fut)
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(rest.split()[0])
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", choices=["tansu", "apache-kafka"], default="tansu")
    parser.add_argument(
        "--batch", help='a batch route: the batch = { ... } table, e.g. "max_records = 100"'
    )
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    n = args.records
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp,
        contextlib.ExitStack() as stops,
    ):
        stack = open_stack(args.broker, Path(tmp), stops)
        t0 = time.monotonic()
        asyncio.run(fill(stack.broker.bootstrap_servers, n, args.keys, args.partitions))
        print(f"produced {n} records in {time.monotonic() - t0:.1f} s")
        bridge = BridgeProcess(stack.workdir, "memory")
        if args.batch:
            route = f'handler = "record"\nbatch = {{ {args.batch} }}'
        else:
            route = 'handler = "key"\nbody = "none"'
        bridge.write_routes(
            routes_toml(
                bootstrap=stack.broker.bootstrap_servers,
                ingress_url=stack.restate.ingress_url,
                group_id="bench-memory",
                metrics_port=bridge.metrics_port,
                routes=f"""
[[routes]]
topic = "{TOPIC}"
target = "object"
service = "Recorder"
key = "{{key}}"
{route}
""",
            )
        )
        # (seconds since ready, accepted, RSS kB, bridge CPU s, Restate+handlers CPU s)
        samples: list[tuple[float, float, int, float, float]] = []
        try:
            bridge.start()
            pid = bridge.process.pid
            ready, cpu0 = time.monotonic(), group_cpu_seconds(pid)
            alive = alive_check(bridge.process)
            done = 0.0
            while done < n:
                alive()
                if time.monotonic() - ready > args.timeout:
                    raise TimeoutError(f"{done:.0f}/{n} records accepted after {args.timeout} s")
                done = bridge.value("restate_bridge_messages_total", outcome="accepted")
                done += bridge.value("restate_bridge_messages_total", outcome="duplicate")
                cpu_now, server_now = group_cpu_seconds(pid), sum(server_cpu(stack.server))
                samples.append(
                    (time.monotonic() - ready, done, rss_kb(pid)[0], cpu_now, server_now)
                )
                time.sleep(0.5)
            cpu = group_cpu_seconds(pid) - cpu0
            hwm = rss_kb(pid)[1]
        finally:
            bridge.process.stop(timeout=60)
    head = next(s for s in samples if s[1] >= n / 10)
    nine = next(s for s in samples if s[1] >= 0.9 * n)
    end = samples[-1]
    first, last = head[0], end[0]
    peak = max(s[2] for s in samples)

    def per_record(a: tuple[float, ...], b: tuple[float, ...], i: int) -> float:
        return (b[i] - a[i]) * 1000 / max(b[1] - a[1], 1)

    start = samples[0]
    print()
    print(
        f"broker {args.broker}: a backlog of {n} records, {args.keys} keys, "
        f"{args.partitions} partitions, {'batch ' + args.batch if args.batch else 'per record'}"
    )
    print(
        f"drained in {last:.1f} s ({n / last:.0f} records/s), bridge CPU "
        f"{cpu * 1000 / n:.3f} ms/record"
    )
    print(
        f"first tenth: {head[1] / first:.0f} records/s, CPU ms/record: bridge "
        f"{per_record(start, head, 3):.3f}, Restate+handlers {per_record(start, head, 4):.2f}"
    )
    print(
        f"last tenth: {(end[1] - nine[1]) / (last - nine[0]):.0f} records/s, CPU ms/record: "
        f"bridge {per_record(nine, end, 3):.3f}, Restate+handlers {per_record(nine, end, 4):.2f}"
        " (sampled every 0.5 s)"
    )
    print(
        f"bridge RSS: peak sampled {peak / 1024:.0f} MiB, VmHWM {hwm / 1024:.0f} MiB "
        f"(target <= {TARGET_RSS_MB} MB)"
    )
    tenths = [next(s for s in samples if s[1] >= n * i / 10) for i in range(1, 11)]
    print(
        "bridge RSS at each tenth drained: "
        + ", ".join(f"{s[2] / 1024:.0f}" for s in tenths)
        + " MiB (a leak grows with the backlog; buffers plateau)"
    )
    print(f"command: {shlex.join([sys.executable, '-m', 'bench.memory', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
