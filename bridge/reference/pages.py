"""The reference pages, each a Markdown text made from the code: the routing file (from the
config schema), the metrics (from a real :class:`~bridge.operate.metrics.Metrics`), the command
line (from its parser) and the ingress client (mkdocstrings directives for its public names)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from .. import ingress
from ..config.schema import ENV_OVERRIDES
from ..core import template
from ..core.record import RESERVED_HEADER_PREFIX, RESERVED_HEADERS
from ..operate import metrics as metrics_module
from ..operate.metrics import Metrics
from .options import Table, one_paragraph, tables

COMMAND = "python -m bridge.reference"


def banner(what: str) -> str:
    """The first line of every generated page."""
    return (
        f"<!-- Generated from {what} by `{COMMAND}`; edit the code, not this page, "
        "then run it again. -->\n\n"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- the routing file ---------------------------------------------------------------------------

ENVIRONMENT: tuple[tuple[str, str], ...] = (
    (
        "BRIDGE_LOG_LEVEL",
        "`debug`, `info` (default), `warning`, `error` or `critical`, any case; "
        "`run --log-level` wins.",
    ),
    (
        "RESTATE_AUTH_TOKEN",
        "Sent as `Authorization: Bearer` when neither `[restate] token_env` nor `token_file` is "
        "set; never logged or shown.",
    ),
    (
        "the variable any `*_env` option names",
        "That secret; unset or empty is an error.",
    ),
)
"""The variables the loader reads by name besides the overrides of ``ENV_OVERRIDES``."""


def _environment() -> Iterator[str]:
    yield "## Environment variables\n\n"
    yield (
        "The environment is read once, with the file, by `check`, `route` and `run` alike; a "
        "bad value is reported as `$NAME: message` (exit 2). An empty variable counts as "
        "unset.\n\n"
    )
    yield "| variable | what it does |\n|---|---|\n"
    for (table, key), variable in ENV_OVERRIDES.items():
        yield f"| `{variable}` | overrides `[{table}] {key}` (checked the same way) |\n"
    for variable, doc in ENVIRONMENT:
        name = variable if " " in variable else f"`{variable}`"
        yield f"| {name} | {_cell(doc)} |\n"
    yield "\n"


def _table(table: Table) -> Iterator[str]:
    yield f"## `{table.heading}`\n\n"
    if table.doc:
        yield f"{table.doc}\n\n"
    yield "| key | type | default | allowed | description |\n|---|---|---|---|---|\n"
    for o in table.options:
        row = (f"`{o.key}`", o.type, o.default_text, o.allowed, o.doc)
        yield "| " + " | ".join(_cell(c) for c in row) + " |\n"
    yield "\n"
    for name, doc in table.secrets:
        yield (
            f"Secret `{name}`, never written in the file: {doc} Set `{name}_env` or "
            f"`{name}_file`, not both.\n\n"
        )


def routes_page() -> str:
    """``docs/reference/routes.md``."""
    parts = [banner("`bridge/config/schema.py`"), "# Routing file reference\n\n"]
    parts.append(
        "Every table and key of the routing file (`routes.toml`), with its type as written in "
        'TOML, its default and the values it allows. Durations are strings such as `"4s"`, '
        '`"500ms"`, `"1h30m"` or `"PT2S"`. `restate-bridge schema` prints the same as a JSON '
        "Schema (`routes.schema.json`); `restate-bridge check` validates a file, the rules "
        "across keys included.\n\n"
    )
    for table in tables():
        parts.extend(_table(table))
    reserved = ", ".join(f"`{h}`" for h in sorted(RESERVED_HEADERS))
    parts.append(
        "Header names a route may not forward, in any case: "
        f"{reserved} and any `{RESERVED_HEADER_PREFIX}*`.\n\n"
    )
    fields = (template.__doc__ or "").split("\n\n")[1]  # the module docstring's second paragraph
    parts.append(f"## Templates\n\n{one_paragraph(fields)}\n\n")
    parts.extend(_environment())
    return "".join(parts)


# -- metrics ------------------------------------------------------------------------------------

_EXPOSED = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}


def metrics_page() -> str:
    """``docs/reference/metrics.md``: read from a fresh :class:`Metrics` on its own registry."""
    metrics = Metrics(CollectorRegistry())
    parts = [banner("`bridge/operate/metrics.py`"), "# Metrics reference\n\n"]
    parts.append(f"{one_paragraph((metrics_module.__doc__ or '').split(chr(10) * 2)[1])}\n\n")
    parts.append(
        "Counters and histograms also expose a `_created` series (when each series started); "
        "besides these, the standard `process_*` and `python_*` collectors.\n\n"
    )
    parts.append("| metric | type | labels | help |\n|---|---|---|---|\n")
    found = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    families = sorted(((next(iter(m.describe())), m) for m in found), key=lambda f: f[0].name)
    for family, metric in families:
        suffixes = _EXPOSED.get(family.type, [""])
        names = ", ".join(f"`{family.name}{s}`" for s in suffixes)
        labels = ", ".join(f"`{label}`" for label in metric._labelnames)
        row = (names, family.type, labels, family.documentation)
        parts.append("| " + " | ".join(_cell(c) for c in row) + " |\n")
    return "".join(parts)


# -- the command line ---------------------------------------------------------------------------


def _verbs(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _written(action: argparse.Action) -> str:
    """How an argument is written: ``ROUTES``, ``--topic TOPIC``, ``--wait``."""
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if not action.option_strings:
        return metavar
    takes_value = action.nargs != 0
    return action.option_strings[0] + (f" {metavar}" if takes_value else "")


def _synopsis(sub: argparse.ArgumentParser, actions: list[argparse.Action]) -> str:
    """The verb with its positionals, required options and required choices, then
    ``[options]``: argparse's own usage lines differ between Python versions."""
    words = [sub.prog]
    for group in sub._mutually_exclusive_groups:
        if group.required:
            words.append("(" + " | ".join(_written(a) for a in group._group_actions) + ")")
    chosen = {a for g in sub._mutually_exclusive_groups if g.required for a in g._group_actions}
    words += [_written(a) for a in actions if not a.option_strings or a.required]
    if any(a.option_strings and not a.required and a not in chosen for a in actions):
        words.append("[options]")
    return " ".join(words)


def _argument(action: argparse.Action, sub: argparse.ArgumentParser) -> str:
    name = f"`{_written(action)}`"
    parts = [action.help or ""]
    if action.choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if action.required and action.option_strings:
        parts.append("required")
    for group in sub._mutually_exclusive_groups:
        if action in group._group_actions:
            others = [f"`{a.option_strings[0]}`" for a in group._group_actions if a is not action]
            parts.append(("or " if group.required else "not with ") + ", ".join(others))
    if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
        parts.append(f"default: `{action.default}`")
    return f"| {name} | {_cell('; '.join(p for p in parts if p))} |\n"


def cli_page(build_parser: Callable[[], argparse.ArgumentParser], notes: str = "") -> str:
    """``docs/reference/cli.md``, from the parser ``build_parser`` makes; ``notes``: the CLI
    module's docstring, whose paragraph on exit codes ends the page."""
    parser = build_parser()
    parts = [banner("`bridge/cli.py` (`build_parser`)"), "# Command line reference\n\n"]
    parts.append(f"{parser.description}\n\n")
    for name, help_, sub in _verbs(parser):
        parts.append(f"## `{parser.prog} {name}`\n\n{help_}\n\n")
        if sub.description:
            parts.append(f"{sub.description}\n\n")
        actions = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        parts.append(f"```text\n{_synopsis(sub, actions)}\n```\n\n")
        if actions:
            parts.append("| argument | what it does |\n|---|---|\n")
            parts.extend(_argument(a, sub) for a in actions)
            parts.append("\n")
    codes = [p for p in notes.split("\n\n") if p.startswith("Exit codes")]
    if codes:
        parts.append(f"## Exit codes\n\n{one_paragraph(codes[0])}\n")
    return "".join(parts)


# -- the ingress client -------------------------------------------------------------------------


def client_page() -> str:
    """``docs/reference/client.md``: one mkdocstrings directive per name ``bridge.ingress``
    exports, the clients first, then the values they take and give, then the errors."""
    parts = [banner("`bridge/ingress/__init__.py` (`__all__`)"), "# Ingress client API\n\n"]
    summary = (ingress.__doc__ or "").split("\n\n")[0]
    parts.append(f"{one_paragraph(summary)}\n\n")
    errors = [n for n in ingress.__all__ if _is_error(getattr(ingress, n))]
    clients = [n for n in ingress.__all__ if n.endswith(("Client", "Target", "Handle"))]
    clients.sort(
        key=lambda n: (
            not n.endswith("Client"),
            n.removeprefix("Sync"),
            n != n.removeprefix("Sync"),
        )
    )
    values = [n for n in ingress.__all__ if n not in errors and n not in clients]
    for heading, names in (("Clients", clients), ("Values", values), ("Errors", errors)):
        parts.append(f"## {heading}\n\n")
        for name in names:
            parts.append(f"::: bridge.ingress.{name}\n    options:\n      heading_level: 3\n\n")
    return "".join(parts).rstrip("\n") + "\n"


def _is_error(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def route_keys_listed() -> frozenset[str]:
    """The ``[[routes]]`` keys the reference lists (a test holds them equal to ``ROUTE_KEYS``)."""
    routes = next(t for t in tables() if t.name == "routes")
    return frozenset(o.key for o in routes.options)
