"""Client CPU per one-way send: bridge.ingress.Client next to bare aiohttp (and httpx), one run.

    .venv/bin/python -m bench.ingress_client [--requests 3000] [--concurrency 64] [--rounds 3]
        [--baseline-transport OLD_HTTP_PY]

Starts its own Restate server and handlers (tests/stack), then sends ``--requests`` one-way
``/send`` calls to ``Greeter/greet`` with ``--concurrency`` in flight, per client, in interleaved
rounds. Reports the median of client-process CPU ms per request and requests/s. The server runs
in another process, so process CPU time is the client's own cost.

``--baseline-transport``: another version of ``bridge/ingress/_http.py`` (``git show
REV:bridge/ingress/_http.py > /tmp/old_http.py``), measured as one more contender in the same
rounds: the client over that transport's ``ConnectionPool``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from bridge.ingress import Client
from bridge.ingress._http import Origin
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

SendOnce = Callable[[int], Awaitable[None]]


async def measure(send: SendOnce, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU ms per request, requests per second) for ``requests`` calls, ``concurrency`` at once."""
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            await send(i)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu * 1000 / requests, requests / wall


def client_over(path: Path, ingress: str, concurrency: int) -> Client:
    """A client whose pool is the ``ConnectionPool`` of the transport module at ``path``."""
    spec = importlib.util.spec_from_file_location("baseline_http", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    client = Client(ingress, max_connections=concurrency)
    client._pool = module.ConnectionPool(
        Origin.parse(ingress), max_connections=concurrency, ssl_context=None
    )
    return client


async def bench(
    ingress: str, requests: int, concurrency: int, rounds: int, baseline: Path | None = None
) -> None:
    body = b'"bench"'
    url = f"{ingress}/Greeter/greet/send"
    client = Client(ingress, max_connections=concurrency)
    old = client_over(baseline, ingress, concurrency) if baseline else None
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
    hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency))

    async def via_client(i: int) -> None:
        await client.service("Greeter", "greet").send("bench")

    async def via_aiohttp(i: int) -> None:
        async with session.post(
            url, data=body, headers={"content-type": "application/json"}
        ) as resp:
            await resp.read()
            assert resp.status == 202, resp.status

    async def via_httpx(i: int) -> None:
        resp = await hx.post(url, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 202, resp.status_code

    async def via_baseline(i: int) -> None:
        assert old is not None
        await old.service("Greeter", "greet").send("bench")

    contenders: dict[str, SendOnce] = {"bridge.ingress.Client": via_client}
    if old is not None:
        contenders["Client, baseline transport"] = via_baseline
    contenders |= {"bare aiohttp": via_aiohttp, "httpx (default pool)": via_httpx}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    try:
        for send in contenders.values():  # warm up connections and code paths
            await measure(send, concurrency * 4, concurrency)
        for _ in range(rounds):
            for name, send in contenders.items():
                results[name].append(await measure(send, requests, concurrency))
    finally:
        await client.aclose()
        if old is not None:
            await old.aclose()
        await session.close()
        await hx.aclose()

    print(f"{requests} /send calls x {rounds} rounds, {concurrency} in flight (median of rounds)")
    print(f"{'client':<28}{'CPU ms/request':>16}{'requests/s':>12}{'CPU vs aiohttp':>16}")
    base_cpu = statistics.median(c for c, _ in results["bare aiohttp"])
    for name, rows in results.items():
        cpu = statistics.median(c for c, _ in rows)
        rate = statistics.median(r for _, r in rows)
        print(f"{name:<28}{cpu:>16.3f}{rate:>12.0f}{cpu / base_cpu:>15.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-transport", type=Path, default=None, metavar="HTTP_PY")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingress-") as tmp:
        workdir = Path(tmp)
        restate = RestateServer(workdir / "restate")
        handlers = HandlerServer(workdir)
        try:
            restate.start()
            handlers.start()
            handlers.register_with(restate)
            asyncio.run(
                bench(
                    restate.ingress_url,
                    args.requests,
                    args.concurrency,
                    args.rounds,
                    args.baseline_transport,
                )
            )
        finally:
            handlers.stop()
            restate.stop()


if __name__ == "__main__":
    sys.exit(main())
