"""The one-command demo: a broker, Restate, example handlers and the bridge, fed a live stream.

    make demo                      # or: .venv/bin/python -m examples.demo [--seconds 30] [--exit]

Starts tansu (an embedded Kafka-protocol broker), a Restate server, the handlers in
examples/handlers.py and the bridge with the top-level routes.toml, then produces orders, payments
and notifications (with a few poison records) and prints progress every second. At the end it
prints a summary and where to look, and keeps the stack running until Ctrl-C or SIGTERM (in a
terminal or not: under nohup, an IDE or `make demo > log &` too); `--exit` stops after the
summary instead. Stopping stops everything it started and removes its working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.stack.kafka_io import create_topics
from tests.stack.procs import Process, free_port, port_open
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer
from tests.stack.tansu import TansuBroker

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ("orders", "payments", "notifications", "restate-bridge.dlq")


def preferred_port(port: int) -> int:
    """The usual port when it is free (so the documented URLs work), else any free one."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("restate_bridge_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def joining(port: int) -> bool:
    """Whether the bridge is still joining its consumer group (``/readyz`` says so)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            resp.read()
            return False
    except urllib.error.HTTPError as exc:
        return b"consumer group" in exc.read()
    except (urllib.error.URLError, OSError):
        return True  # not serving yet


def total(samples: dict[str, float], prefix: str, *parts: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix) and all(p in k for p in parts))


async def produce_stream(
    bootstrap: str, seconds: float, rate: float, stop: asyncio.Event, progress: list[int]
) -> int:
    """Orders, payments and notifications at about ``rate`` records/s, with a few poison ones."""
    rng = random.Random(7)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while not stop.is_set() and time.monotonic() - started < seconds:
            customer = f"c-{rng.randrange(40)}"
            roll = rng.random()
            trace = [("x-trace", f"trace-{sent}".encode())]
            if roll < 0.55:
                value: bytes = json.dumps(
                    {"customer": customer, "sku": f"sku-{rng.randrange(100)}", "qty": 1 + sent % 3}
                ).encode()
                if rng.random() < 0.01:
                    value = b"<order>not json</order>"  # poison: dead-lettered with the reason
                await producer.send("orders", value, key=customer.encode(), headers=trace)
            elif roll < 0.8:
                pid = f"pay-{rng.randrange(400)}"  # repeats: a workflow runs once per id
                body = {"payment_id": pid, "amount": round(rng.uniform(5, 500), 2)}
                await producer.send("payments", json.dumps(body).encode(), key=pid.encode())
            else:
                message = {"message": {"to": customer, "template": "shipped"}}
                headers = [("channel", b"email" if rng.random() < 0.8 else b"sms")]
                if rng.random() < 0.97:
                    headers.append(("delay", f"{rng.randrange(1, 4)}s".encode()))
                await producer.send("notifications", json.dumps(message).encode(), headers=headers)
            sent += 1
            progress[0] = sent
            await asyncio.sleep(1 / rate)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def watch(port: int, produced: list[int], stop: asyncio.Event) -> None:
    last, last_t = 0.0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(1)
        s = metrics(port)
        done = total(s, "restate_bridge_messages_total", 'outcome="accepted"') + total(
            s, "restate_bridge_messages_total", 'outcome="duplicate"'
        )
        now = time.monotonic()
        rate = (done - last) / (now - last_t)
        last, last_t = done, now
        if done == 0 and joining(port):  # a group's first join takes a few seconds
            print(f"  produced {produced[0]:>6}  joining the Kafka consumer group...", flush=True)
            continue
        print(
            f"  produced {produced[0]:>6}  accepted {done:>6.0f}  {rate:>6.0f}/s  "
            f"lag {total(s, 'restate_bridge_consumer_lag'):>4.0f}  "
            f"dead letters {total(s, 'restate_bridge_messages_total', 'dead_lettered'):>3.0f}  "
            f"in flight {total(s, 'restate_bridge_in_flight'):>3.0f}",
            flush=True,
        )


def summary(samples: dict[str, float], produced: int) -> str:
    lines = [f"\nSummary: {produced} records produced"]
    routes = sorted({k.split('route="')[1].split('"')[0] for k in samples if 'route="' in k})
    for route in routes:
        if not route:
            continue
        counts = {
            outcome: total(samples, "restate_bridge_messages_total", f'route="{route}"', outcome)
            for outcome in ("accepted", "duplicate", "dead_lettered")
        }
        lines.append(
            f"  route {route:<10} accepted {counts['accepted']:>6.0f}   duplicates "
            f"{counts['duplicate']:>5.0f}   dead-lettered {counts['dead_lettered']:>3.0f}"
        )
    unrouted = total(samples, "restate_bridge_messages_total", "unrouted")
    lines.append(f"  unrouted (sms notifications) {unrouted:.0f}")
    return "\n".join(lines)


async def run(args: argparse.Namespace, workdir: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ExitStack() as stack:
        print("Starting the demo stack (first run installs the Restate server from npm)...")
        broker = TansuBroker(workdir / "tansu")
        broker.port = preferred_port(9092)
        stack.callback(broker.stop)  # registered first: a failed start still stops the process
        await asyncio.to_thread(broker.start)  # its probe runs an event loop of its own
        restate = RestateServer(workdir / "restate")
        restate.ingress_port = preferred_port(8080)
        restate.admin_port = preferred_port(9070)
        stack.callback(restate.stop)
        restate.start()
        handlers = HandlerServer(workdir / "handlers", "examples.handlers:app")
        stack.callback(handlers.stop)
        handlers.start()
        handlers.register_with(restate)
        await create_topics(broker.bootstrap_servers, TOPICS, partitions=4)

        metrics_port = preferred_port(9464)
        bridge = Process(
            "bridge",
            [sys.executable, "-m", "bridge", "run", "--routes", str(ROOT / "routes.toml")],
            workdir / "bridge.log",
            cwd=ROOT,
            env={
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "RESTATE_URL": restate.ingress_url,
                "BRIDGE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            },
        )
        stack.callback(bridge.stop, 40)
        bridge.start()
        bridge.wait_until(lambda: port_open(metrics_port), 30, "serving its status page")
        page = f"http://127.0.0.1:{metrics_port}/"
        print(f"\nBridge status page: {page}   (metrics: {page}metrics)")
        print(f"Restate UI:         {restate.admin_url}/ui/")
        print(f"Logs:               {workdir}  (removed when the demo stops)\n")
        print(
            f"Producing for {args.seconds:.0f}s at about {args.rate:.0f} records/s; Ctrl-C stops."
        )

        produced = [0]
        watcher = asyncio.create_task(watch(metrics_port, produced, stop))
        produced[0] = await produce_stream(
            broker.bootstrap_servers, args.seconds, args.rate, stop, produced
        )
        # let the bridge catch up (delayed notifications finish in Restate on their own)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            s = metrics(metrics_port)
            if (
                total(s, "restate_bridge_consumer_lag") == 0
                and total(s, "restate_bridge_pending_records") == 0
            ):
                break
            await asyncio.sleep(0.5)
        watcher.cancel()
        samples = metrics(metrics_port)
        print(summary(samples, produced[0]))
        orders = await _get(f"{restate.ingress_url}/Orders/c-7/list_orders")
        print(f"\nCustomer c-7's orders, in Kafka order, once each: {len(orders)} orders")
        print("Where to look next:")
        print(f"  status page     {page}")
        print(f"  Prometheus      {page}metrics")
        print(f"  Restate UI      {restate.admin_url}/ui/  (invocations, object state)")
        print(f"  dead letters    topic restate-bridge.dlq on {broker.bootstrap_servers}")
        print(f"  the client      RESTATE_URL={restate.ingress_url} python -m examples.client")
        if not args.exit and not stop.is_set():
            print(
                "\nThe stack keeps running so you can look around. Ctrl-C (or SIGTERM) stops "
                "everything.",
                flush=True,
            )
            await stop.wait()
        print("Stopping the bridge, the handlers, Restate and the broker...")


async def _get(url: str) -> Any:
    def call() -> Any:
        req = urllib.request.Request(url, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    return await asyncio.to_thread(call)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to produce")
    parser.add_argument("--rate", type=float, default=150.0, help="records per second")
    parser.add_argument("--exit", action="store_true", help="stop after the summary (for scripts)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="restate-bridge-demo-"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        with suppress(KeyboardInterrupt):
            asyncio.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # logs, data dirs: nothing left in /tmp
    print("Stopped; nothing is left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
