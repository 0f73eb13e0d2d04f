"""The ``restate-bridge`` command line: ``run``, ``check``, ``route``, ``result``, ``redrive`` and
``schema``.

``run`` stops on SIGTERM / SIGINT (a second one forces the exit) and reloads its routing file on
SIGHUP; the handlers only set flags.

Exit codes: 0 success, 1 a failure while running (an unreachable Kafka included; for ``result``:
the invocation is not found, not finished, or failed), 2 a bad routes file, environment or
arguments, 3 Kafka refused the connection's security (authentication or TLS: one line
``Kafka at HOST:PORT: <cause>``). A bad file or environment is reported as ``PATH:LINE: message``
/ ``$NAME: message`` lines, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import prometheus_client
from aiokafka.errors import KafkaError

from bridge import __version__

from .config import BridgeConfig, ConfigError, check_log_level, ingress_ssl_context, load_config
from .consume.kafka import KafkaRefused
from .consume.oauth import TokenRefused, kafka_login
from .core.nodes import node_label
from .core.record import Record
from .core.redrive import Filter, Letter, Summary, parse_when
from .core.routing import Invocation, Poison, Router
from .ingress import (
    Client,
    IngressError,
    InvocationError,
    InvocationHandle,
    NotReady,
    ResponseError,
)
from .operate.metrics import Metrics
from .operate.redrive import Options, Redrive, RedriveStopped, group_of
from .operate.registry_watch import RegistryWatch
from .operate.restate_check import AdminUnreachable, check_against_restate, fetch_services
from .reference.json_schema import schema_text
from .schemas.setup import make_decoder, uses_registry
from .worker import Bridge

log = logging.getLogger("bridge")

EXIT_KAFKA_REFUSED = 3
LOGIN_TIMEOUT = 60.0
"""Seconds a command (`redrive`) waits for its first OAUTHBEARER token."""
"""Kafka refused the connection's security (TLS or SASL): retrying cannot help."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restate-bridge",
        description="Consume Kafka topics and turn every record into a Restate invocation.",
    )
    parser.add_argument("--version", action="version", version=f"restate-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume and forward until SIGTERM or Ctrl-C")
    run.add_argument("--routes", default="routes.toml", type=Path, help="the routing file")
    run.add_argument(
        "--log-level",
        type=_log_level,
        help="debug, info, warning, error or critical (default: $BRIDGE_LOG_LEVEL, else info)",
    )
    run.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop: uvloop when it is installed (auto, the default), or asyncio's own",
    )

    check = commands.add_parser(
        "check",
        help="validate a routing file; exit 2 if it has errors",
        description="Validate a routing file; with a Restate admin API (--restate-admin, "
        "[restate] admin_url or $RESTATE_ADMIN_URL) also check every route against the services "
        "registered there. Exit 0 when it passes, 1 when the admin API cannot be read, 2 for "
        "errors (and for warnings with --strict).",
    )
    check.add_argument("routes", type=Path, help="the routing file")
    check.add_argument(
        "--restate-admin",
        metavar="URL",
        help="Restate's admin API, e.g. http://localhost:9070: every route's service, kind, "
        "handler and visibility must match what is registered",
    )
    check.add_argument(
        "--strict", action="store_true", help="warnings (such as a short retention) exit 2"
    )

    route = commands.add_parser(
        "route", help="print, without sending, the invocations a record would produce"
    )
    route.add_argument("routes", type=Path, help="the routing file")
    route.add_argument("--topic", required=True, help="the record's topic")
    key = route.add_mutually_exclusive_group()
    key.add_argument("--key", help="the record key (UTF-8)")
    key.add_argument("--key-hex", type=_hex, help="the record key as hex bytes")
    route.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="a header (repeatable)"
    )
    value = route.add_mutually_exclusive_group()
    value.add_argument("--value", help="the record value, e.g. a JSON document")
    value.add_argument("--value-file", type=Path, help="read the record value from this file")
    value.add_argument(
        "--value-hex", type=_hex, help="the record value as hex bytes (e.g. a framed Avro record)"
    )
    route.add_argument("--partition", type=int, default=0, help="the record's partition")
    route.add_argument("--offset", type=int, default=0, help="the record's offset")
    route.add_argument(
        "--timestamp", type=int, default=0, help="the record's timestamp (ms since the epoch)"
    )
    route.add_argument(
        "--restate-admin",
        metavar="URL",
        help="Restate's admin API (default: [restate] admin_url or $RESTATE_ADMIN_URL): show "
        "what run would do given what is registered (validate_input, routes that wait)",
    )

    result = commands.add_parser(
        "result",
        help="print the output of an invocation: by id, by idempotency key, or a workflow's",
        description="Print an invocation's output to stdout, then a newline unless it ends with "
        "one (--raw: byte for byte). Exit 0 when printed, 1 when not found, not finished "
        "(without --wait) or failed, 2 for bad arguments.",
    )
    which = result.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", metavar="INVOCATION_ID", help="an invocation id, inv_...")
    which.add_argument("--service", help="with --handler and --idempotency-key [--key]")
    which.add_argument("--workflow", help="a workflow's name, with --workflow-id")
    result.add_argument("--key", help="the virtual object's key, for --service")
    result.add_argument("--handler", help="the handler, for --service")
    result.add_argument("--idempotency-key", help="the idempotency key it was sent with")
    result.add_argument("--workflow-id", help="the workflow's id, for --workflow")
    result.add_argument(
        "--url", help="the ingress (default: [restate] ingress_url of --routes, or $RESTATE_URL)"
    )
    result.add_argument("--routes", type=Path, help="take the ingress, token and TLS from here")
    result.add_argument(
        "--wait", action="store_true", help="attach: wait until it finishes, then print"
    )
    result.add_argument(
        "--raw", action="store_true", help="the output byte for byte, with no newline added"
    )
    result.add_argument(
        "--timeout", type=_seconds, help="with --wait: give up after SECONDS (default: never)"
    )

    redrive = commands.add_parser(
        "redrive",
        help="send the dead letters again with the current routes, each once",
        description="Read the routing file's dead-letter topic up to its current end and send "
        "each dead letter's original record again with the current routes, for the route it "
        "failed on, under the idempotency key it had (Restate does not run one it accepted "
        "before). What still fails is reported and left in the topic. Exit 0 when nothing "
        "still fails, 1 otherwise (or when a retryable failure persists: the run stops there "
        "and resumes there), 2 for a bad file or arguments, 3 when Kafka refuses the "
        "connection's security.",
    )
    redrive.add_argument("routes", type=Path, help="the routing file")
    redrive.add_argument("--route", metavar="NAME", help="only the dead letters of this route")
    redrive.add_argument(
        "--reason", metavar="REGEX", type=_regex, help="only those whose bridge.error matches"
    )
    redrive.add_argument(
        "--since",
        metavar="TIME",
        type=_when,
        help="only records from this time on: ISO 8601 (2026-12-05T06:00Z; no zone: UTC) or a "
        "duration ago (2h, 30m, 1d)",
    )
    redrive.add_argument(
        "--until", metavar="TIME", type=_when, help="only records before this time (as --since)"
    )
    redrive.add_argument(
        "--dry-run", action="store_true", help="print what would be sent; send and commit nothing"
    )
    redrive.add_argument(
        "--limit", metavar="N", type=_count, help="handle at most N dead letters, then stop"
    )
    redrive.add_argument(
        "--group-id", metavar="ID", help="the consumer group (default: <[kafka] group_id>.redrive)"
    )
    redrive.add_argument(
        "--from-start",
        action="store_true",
        help="read the topic from its beginning, whatever the group has committed",
    )

    commands.add_parser(
        "schema",
        help="print the JSON Schema of the routing file (what routes.schema.json holds)",
        description="Print the JSON Schema (draft 2020-12) of the routing file to stdout. Editors "
        "with Taplo / Even Better TOML validate a file against it as it is typed, from a first "
        "line '#:schema ./routes.schema.json'; 'check' also validates the rules across keys.",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _log_level(text: str) -> str:
    wrong = check_log_level(text)
    if wrong is not None:
        raise argparse.ArgumentTypeError(wrong)
    return text.upper()


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def _when(text: str) -> int:
    try:
        return parse_when(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return int(text)


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not hex: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "result":
        return _result(parser, args)
    if args.command == "schema":
        sys.stdout.write(schema_text())
        return 0
    try:
        config = _load(args.routes)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(args, config)
    if args.command == "route":
        return _route(args, config)
    if args.command == "redrive":
        return _redrive(args, config)
    return _run(args, config)


def _load(path: Path, running: BridgeConfig | None = None) -> BridgeConfig:
    """The config, or a :class:`ConfigError`; never another exception, whatever the file holds.
    ``running``: a reload of a running bridge's file (see :func:`load_config`)."""
    try:
        if running is None:
            return load_config(path, os.environ)
        return load_config(path, os.environ, running=running)
    except ConfigError:
        raise
    except Exception as exc:  # a last resort: the reader itself is meant never to raise
        log.debug("loading %s failed", path, exc_info=True)
        message = f"{path}:1: cannot load the routes file: {type(exc).__name__}: {exc}"
        raise ConfigError([message]) from exc


def _check(args: argparse.Namespace, config: BridgeConfig) -> int:
    admin_url = args.restate_admin or config.restate.admin_url
    checked = ""
    if admin_url:
        try:
            verdict = asyncio.run(check_against_restate(config, admin_url))
        except AdminUnreachable as exc:
            print(f"{args.routes}: cannot check the routes against Restate: {exc}", file=sys.stderr)
            return 1
        for problem in verdict.problems:
            print(problem, file=sys.stderr)
        for warning in verdict.warnings:
            print(warning.replace(": route ", ": warning: route ", 1), file=sys.stderr)
        for note in verdict.notes:
            print(f"note: {note}")
        if verdict.problems or (args.strict and verdict.warnings):
            return 2
        checked = (
            f", checked against Restate at {node_label(admin_url)} ({verdict.services} services)"
        )
    print(f"{args.routes}: ok, {len(config.routes)} route(s){checked}")
    for note in scope_notes(config):
        print(f"note: {note}")
    return 0


def _route(args: argparse.Namespace, config: BridgeConfig) -> int:
    headers: list[tuple[str, bytes]] = []
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"--header {item!r}: write it as NAME=VALUE", file=sys.stderr)
            return 2
        headers.append((name, value.encode()))
    key = args.key_hex if args.key is None else args.key.encode()
    record_value = args.value_hex if args.value is None else args.value.encode()
    if args.value_file is not None:
        try:
            record_value = args.value_file.read_bytes()
        except OSError as exc:
            print(f"--value-file {args.value_file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    record = Record(
        topic=args.topic,
        partition=args.partition,
        offset=args.offset,
        timestamp=args.timestamp,
        key=key,
        value=record_value,
        headers=tuple(headers),
    )
    if uses_registry(config):  # framed fields are decoded through the registry, as `run` does
        decoded = asyncio.run(_decode(config, record))
        if isinstance(decoded, str):
            print(decoded, file=sys.stderr)
            return 1
        record = decoded
    planned = Router(config).plan(record)
    if not planned:
        print(f"no route matches a record on topic {args.topic!r}", file=sys.stderr)
    admin_url = args.restate_admin or config.restate.admin_url
    registry = asyncio.run(_registry(config, admin_url)) if admin_url and planned else None
    if registry is not None and registry.reason is not None:
        print(f"cannot read Restate's registry: {registry.reason}", file=sys.stderr)
        if args.restate_admin:  # asked for: a verdict without it would mislead
            return 1
        registry = None  # the file's admin_url: the plan still stands, without the registry
    for item in planned:
        described = _describe(config, item)
        if registry is not None and isinstance(item, Invocation):
            described.update(_registry_verdict(registry, item))
        sys.stdout.write(orjson.dumps(described).decode() + "\n")
    return 0


async def _registry(config: BridgeConfig, admin_url: str) -> RegistryWatch:
    """Restate's registry read once, the routes judged against it as ``run`` judges them."""
    fetch = functools.partial(fetch_services, config, admin_url)
    routes = config.routes
    watch = RegistryWatch(fetch, lambda: routes, Metrics(), interval=0, admin_url=admin_url)
    await watch.refresh()
    return watch


def _registry_verdict(registry: RegistryWatch, item: Invocation) -> dict[str, object]:
    """What ``run`` does with ``item`` given the registry: it waits (the route does not fit)
    or is dead-lettered (``validate_input`` refuses its body)."""
    if problems := registry.unfit.get(item.route):
        return {"waits": problems}
    check = registry.input_check(item.route)
    if check is not None and (problem := check.problem(item.body)) is not None:
        return {
            "dead_letter": f"input refused by {item.service}/{item.handler}'s schema: {problem}"
        }
    return {}


async def _decode(config: BridgeConfig, record: Record) -> Record | str:
    """``record`` with its framed fields decoded, or why the registry could not be asked."""
    registry_login = config.schema_registry.kafka_oauth_token
    async with kafka_login(config.kafka if registry_login else None, LOGIN_TIMEOUT) as login:
        decoder = make_decoder(config, Metrics(), None if login is None else login.token)
        async with decoder.registry:
            await decoder.prepare([record])
            decoded = decoder.decode(record)
    if decoded is None:
        return f"schema registry unreachable: {decoder.reason}"
    return decoded


def scope_notes(config: BridgeConfig) -> list[str]:
    """What a routing file with scoped routes needs from the Restate server, which ``check``
    cannot see: one sentence per scoped route."""
    notes = []
    for route in config.routes:
        if route.scope is None:
            continue
        needs = "experimental-enable-vqueues = true"
        if route.target == "object":
            needs += " and experimental-enable-scoped-virtual-objects = true"
        notes.append(
            f"route {route.name!r} sends scoped invocations: the Restate server needs {needs} "
            "(Restate 1.7 answers 400 otherwise, and the bridge retries with the ingress marked "
            "down)"
        )
    return notes


def _describe(config: BridgeConfig, item: object) -> dict[str, object]:
    if isinstance(item, Poison):
        return {"route": item.route, "dead_letter": item.reason}
    if not isinstance(item, Invocation):  # a Skip: on_null = "skip"
        return {"route": getattr(item, "route", None), "skipped": True}
    # a client is only a URL until its first request: nothing is sent here; the first node's
    # URL (any node would do)
    client = Client(config.restate.ingress_urls[0])
    url = node_label(item.target(client).send_url(delay=item.delay))  # no user:password@
    described: dict[str, object] = {
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
        **({"scope": item.scope} if item.scope is not None else {}),
        **({"limit_key": item.limit_key} if item.limit_key is not None else {}),
    }
    if item.trace_dropped:  # sent all the same, without them
        described["trace_headers_dropped"] = list(item.trace_dropped)
    return described


def _run(args: argparse.Namespace, config: BridgeConfig) -> int:
    logging.basicConfig(
        level=args.log_level or config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    factory = loop_factory(getattr(args, "loop", "auto"))
    # secrets are repr=False fields: the whole configuration is safe to log
    log.debug("configuration: %r; event loop: %s", config, "uvloop" if factory else "asyncio")
    for note in scope_notes(config):
        log.info("%s", note)
    bridge = Bridge(config, load=lambda running: _load(args.routes, running))
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(bridge))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``run`` uses: uvloop's when it is installed (``auto``) or asked for, else
    asyncio's own. uvloop saves about a tenth of the bridge's CPU per record where the bridge is
    the busy one (docs/performance.md)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            message = "--loop uvloop: uvloop is not installed (pip install uvloop)"
            raise SystemExit(message) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


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

    def handle_reload() -> None:
        log.info("received SIGHUP: reloading %s", bridge.config.path)
        bridge.request_reload()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle_exit, sig)
    loop.add_signal_handler(signal.SIGHUP, handle_reload)
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)
    try:
        await bridge.run(stop)
    except asyncio.CancelledError:
        return 1
    except KafkaRefused as exc:
        log.error("%s", exc)
        return EXIT_KAFKA_REFUSED
    except KafkaError as exc:
        log.error("Kafka at %s: %s", bridge.config.kafka.bootstrap_servers, exc)
        return 1
    except OSError as exc:  # e.g. the metrics port is taken
        log.error("cannot start: %s", exc)
        return 1
    log.info("stopped")
    return 0


def log_tasks() -> None:
    """SIGUSR1: log every asyncio task with the chain of awaits it is suspended in, for a process
    that seems stuck (py-spy shows only the event loop's own frame)."""
    tasks = asyncio.all_tasks()
    lines = [f"received SIGUSR1: {len(tasks)} tasks"]
    for task in sorted(tasks, key=lambda t: t.get_name()):
        lines.append(f"  {task.get_name()}: {' -> '.join(_awaits(task.get_coro())) or 'done'}")
    log.warning("%s", "\n".join(lines))


def _awaits(awaitable: object) -> list[str]:
    """``name (file:line)`` of each coroutine in the chain, outermost first."""
    chain: list[str] = []
    while awaitable is not None and len(chain) < 64:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            if not hasattr(awaitable, "cr_frame"):  # a future or another awaitable: the end
                chain.append(type(awaitable).__name__)
            break
        where = frame.f_code.co_filename.rsplit("/", 2)[-2:]
        chain.append(f"{frame.f_code.co_name} ({'/'.join(where)}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return chain


def _result(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    problem = _result_arguments(args)
    if problem is not None:
        parser.error(f"result: {problem}")  # exits 2
    if args.routes is not None:  # its ingress_url, token and TLS ($RESTATE_URL wins, as in run)
        try:
            restate = _load(args.routes).restate
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        client = Client(
            args.url or restate.ingress_urls[0],  # every node knows every invocation
            token=restate.token,
            ssl_context=ingress_ssl_context(restate),
        )
    elif args.url is not None:
        client = Client(args.url, token=os.environ.get("RESTATE_AUTH_TOKEN") or None)
    else:
        client = Client.from_env()
    return asyncio.run(_print_result(client, args))


def _result_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with ``result``'s arguments, or ``None``."""
    if args.service is not None:
        if args.handler is None or args.idempotency_key is None:
            return "--service needs --handler and --idempotency-key"
    elif args.key is not None or args.handler is not None or args.idempotency_key is not None:
        return "--key, --handler and --idempotency-key go with --service"
    if (args.workflow is None) != (args.workflow_id is None):
        return "--workflow and --workflow-id go together"
    if args.timeout is not None and not args.wait:
        return "--timeout goes with --wait"
    return None


async def _print_result(client: Client, args: argparse.Namespace) -> int:
    async with client:
        if args.id is not None:
            what, handle = f"invocation {args.id}", client.invocation(args.id)
        elif args.workflow is not None:
            what = f"workflow {args.workflow}/{args.workflow_id}"
            handle = client.workflow_handle(args.workflow, args.workflow_id)
        else:
            handle = _by_key(client, args)
            target = args.service if args.key is None else f"{args.service}/{args.key}"
            what = f"{target}/{args.handler} with idempotency key {args.idempotency_key!r}"
        try:
            if args.wait:
                body = await handle.attach(output=bytes, timeout=args.timeout)
            else:
                body = await handle.output(output=bytes)
        except NotReady:
            print(f"{what}: not finished yet (--wait to wait for it)", file=sys.stderr)
            return 1
        except ResponseError as exc:
            print(f"{what}: {_verdict(exc)}", file=sys.stderr)
            return 1
        except IngressError as exc:
            print(f"{what}: {client.url}: {exc}", file=sys.stderr)
            return 1
    sys.stdout.buffer.write(body)
    if not args.raw and not body.endswith(b"\n"):  # a shell prompt starts on a line of its own
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return 0


def _by_key(client: Client, args: argparse.Namespace) -> InvocationHandle:
    if args.key is None:
        return client.service_invocation(args.service, args.handler, args.idempotency_key)
    return client.object_invocation(args.service, args.key, args.handler, args.idempotency_key)


def _verdict(exc: ResponseError) -> str:
    # attach reports an unknown invocation as its outcome: 404 "not found" from the invocation
    if exc.status == 404 and (not isinstance(exc, InvocationError) or exc.message == "not found"):
        return "not found (never made, or its result expired)"
    if isinstance(exc, InvocationError):
        return f"failed: {exc.status} {exc.message}"
    return f"the ingress answered {exc}"


def _redrive(args: argparse.Namespace, config: BridgeConfig) -> int:
    topic = config.dead_letter.topic
    if topic is None:
        print(f"{args.routes}: no [dead_letter] topic: nothing to redrive", file=sys.stderr)
        return 2
    if args.group_id == config.kafka.group_id:  # its commits would fail while the bridge runs
        print("redrive: --group-id must not be the bridge's own group", file=sys.stderr)
        return 2
    since, until = args.since, args.until
    if since is not None and until is not None and since >= until:
        print("redrive: --since must be earlier than --until", file=sys.stderr)
        return 2
    options = Options(
        filter=Filter(route=args.route, reason=args.reason, since=since, until=until),
        dry_run=args.dry_run,
        limit=args.limit,
        group_id=args.group_id,
        from_start=args.from_start,
    )
    if args.route is not None and all(r.name != args.route for r in config.routes):
        print(f"note: no route is called {args.route!r} in {args.routes} now", file=sys.stderr)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = RedriveReport(config, sys.stderr.isatty())
    summary = Summary()
    what = f"redrive of {topic!r} (group {group_of(config, options)!r})"
    code = 0
    try:
        asyncio.run(_redriving(config, options, report, summary))
    except KafkaRefused as exc:
        report.end()
        print(exc, file=sys.stderr)
        return EXIT_KAFKA_REFUSED
    except TokenRefused as exc:
        report.end()
        print(f"Kafka at {config.kafka.bootstrap_servers}: OAUTHBEARER: {exc}", file=sys.stderr)
        return EXIT_KAFKA_REFUSED
    except (RedriveStopped, KafkaError, OSError) as exc:
        report.end()
        print(f"{what} stopped: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        report.end()
        print(f"{what} interrupted", file=sys.stderr)
        code = 1
    report.end()
    done = "dry run, nothing sent or committed: " if args.dry_run else ""
    print(f"{what}: {done}{summary.line(dry_run=args.dry_run)}", file=sys.stderr)
    return 1 if code or summary.still_failing else 0


async def _redriving(
    config: BridgeConfig, options: Options, report: RedriveReport, summary: Summary
) -> None:
    restate = config.restate
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                Client(
                    url,
                    token=restate.token,
                    timeout=restate.request_timeout.total_seconds(),
                    ssl_context=ingress_ssl_context(restate),
                )
            )
            for url in restate.ingress_urls
        ]
        login = await stack.enter_async_context(kafka_login(config.kafka, LOGIN_TIMEOUT))
        decode = None
        if uses_registry(config):  # framed fields are decoded through the registry, as in run
            decoder = make_decoder(config, Metrics(), None if login is None else login.token)
            stack.push_async_callback(decoder.registry.aclose)

            async def decode(record: Record) -> Record | str:
                await decoder.prepare([record])
                decoded = decoder.decode(record)
                return decoded or f"schema registry unreachable: {decoder.reason}"

        await Redrive(config, options, clients, report, summary, decode, login).run()


class RedriveReport:
    """``redrive``'s output: would-be invocations on stdout (one JSON line each, as ``route``
    prints them), what still fails on stderr, and a progress line when stderr is a terminal."""

    def __init__(self, config: BridgeConfig, tty: bool) -> None:
        self._config = config
        self._tty = tty
        self._shown = 0.0
        self._line = False

    def would_send(self, where: str, letter: Letter, item: Invocation) -> None:
        described: dict[str, object] = {
            "dead_letter_at": where,
            "record": letter.record.coordinates,
        }
        described.update(_describe(self._config, item))
        self._clear()
        sys.stdout.write(orjson.dumps(described).decode() + "\n")
        sys.stdout.flush()

    def failing(self, where: str, letter: Letter | None, reason: str) -> None:
        self._clear()
        about = "" if letter is None else f" ({letter.record.coordinates}, route {letter.route!r})"
        print(f"{where}{about}: still failing: {reason}", file=sys.stderr)

    def progress(self, summary: Summary, total: int | None) -> None:
        now = time.monotonic()
        if not self._tty or now - self._shown < 0.2:
            return
        self._shown = now
        of = "" if total is None else f" of at most {total}"
        sys.stderr.write(f"\r\x1b[Kredrive: {summary.handled}{of}: {summary.line()}")
        sys.stderr.flush()
        self._line = True

    def _clear(self) -> None:
        if self._line:
            sys.stderr.write("\r\x1b[K")
            self._line = False

    def end(self) -> None:
        """Clear the progress line before the last words."""
        self._clear()
