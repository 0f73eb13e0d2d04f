"""The ``restate-bridge`` command line: ``run``, ``check`` and ``route``.

Exit codes: 0 success, 2 a bad routes file or bad arguments, 1 a failure while running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import prometheus_client
from aiokafka.errors import KafkaError

from bridge import __version__

from .config import BridgeConfig, ConfigError, load_config
from .ingress import Client
from .record import Record
from .routing import Invocation, Poison, Router, Skip
from .worker import Bridge

log = logging.getLogger("bridge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restate-bridge",
        description="Consume Kafka topics and turn every record into a Restate invocation.",
    )
    parser.add_argument("--version", action="version", version=f"restate-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume and forward until SIGTERM or Ctrl-C")
    run.add_argument("--routes", default="routes.toml", type=Path, help="the routing file")
    run.add_argument("--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL", "info"))

    check = commands.add_parser("check", help="validate a routing file; exit 2 if it has errors")
    check.add_argument("routes", type=Path)

    route = commands.add_parser(
        "route", help="print, without sending, the invocations a record would produce"
    )
    route.add_argument("routes", type=Path)
    route.add_argument("--topic", required=True)
    route.add_argument("--key", help="the record key (UTF-8)")
    route.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    route.add_argument("--value", help="the record value, e.g. a JSON document")
    route.add_argument("--partition", type=int, default=0)
    route.add_argument("--offset", type=int, default=0)
    route.add_argument("--timestamp", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            config = load_config(args.routes, os.environ)
            print(f"{args.routes}: ok, {len(config.routes)} route(s)")
            return 0
        if args.command == "route":
            return _route(args)
        return _run(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


def _route(args: argparse.Namespace) -> int:
    config = load_config(args.routes, os.environ)
    headers: list[tuple[str, bytes]] = []
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"--header {item!r}: write it as NAME=VALUE", file=sys.stderr)
            return 2
        headers.append((name, value.encode()))
    record = Record(
        topic=args.topic,
        partition=args.partition,
        offset=args.offset,
        timestamp=args.timestamp,
        key=None if args.key is None else args.key.encode(),
        value=None if args.value is None else args.value.encode(),
        headers=tuple(headers),
    )
    planned = Router(config).plan(record)
    if not planned:
        print(f"no route matches a record on topic {args.topic!r}", file=sys.stderr)
    for item in planned:
        sys.stdout.write(orjson.dumps(_describe(config, item)).decode() + "\n")
    return 0


def _describe(config: BridgeConfig, item: Invocation | Poison | Skip) -> dict[str, object]:
    if isinstance(item, Poison):
        return {"route": item.route, "dead_letter": item.reason}
    if isinstance(item, Skip):
        return {"route": item.route, "skipped": "a tombstone, and the route says on_null = 'skip'"}
    # a client is only a URL until its first request: nothing is sent here
    url = item.target(Client(config.restate.ingress_url)).send_url(delay=item.delay)
    return {
        "route": item.route,
        "target": item.kind,
        "url": url,
        "service": item.service,
        "handler": item.handler,
        "key": item.key,
        "idempotency_key": item.idempotency_key,
        "delay_seconds": None if item.delay is None else item.delay.total_seconds(),
        "headers": item.headers,
        "content_type": item.content_type,
        "body": None if item.body is None else item.body.decode("utf-8", "replace"),
    }


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    config = load_config(args.routes, os.environ)
    bridge = Bridge(config, token=os.environ.get("RESTATE_AUTH_TOKEN") or None)
    return asyncio.run(_serve(bridge))


async def _serve(bridge: Bridge) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None

    def handle_exit(sig: signal.Signals) -> None:
        if stop.is_set():  # a second signal forces the exit, as in uvicorn
            log.warning("received %s again: exiting without draining", sig.name)
            main_task.cancel()
            return
        log.info("received %s: stopping (again to force)", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle_exit, sig)
    try:
        await bridge.run(stop)
    except asyncio.CancelledError:
        return 1
    except KafkaError as exc:
        log.error("Kafka at %s: %s", bridge.config.kafka.bootstrap_servers, exc)
        return 1
    except OSError as exc:  # e.g. the metrics port is taken
        log.error("cannot start: %s", exc)
        return 1
    log.info("stopped")
    return 0
