"""`natsbridge import rabbitmq|kafka`: write a starting config from what a legacy broker has.

Each run reads the legacy side (rabbitmq.py, kafka.py), checks the config it would write
with the config loader itself (an output that would not validate is a bug, reported as one
line, and nothing is written), then writes it to `-o FILE` (replaced atomically) or stdout.
A summary goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from natsbridge.bridge.config.units import parse_duration
from natsbridge.bridge.errors import ConfigError
from natsbridge.bridge.importers.names import check_subject_prefix
from natsbridge.bridge.importers.plan import ImportFailed, ImportPlan
from natsbridge.bridge.importers.writer import Form, render

DEFAULT_PREFIX = "legacy"
DEFAULT_TIMEOUT_S = 15.0  # a Kafka admin request without an answer
MAX_TIMEOUT_S = 3600.0


def add_parsers(commands: Any) -> None:
    """Register `import rabbitmq` and `import kafka` on the CLI's subcommands."""
    parser = commands.add_parser(
        "import", help="write a starting migration config from a RabbitMQ or Kafka broker"
    )
    brokers = parser.add_subparsers(dest="broker", metavar="BROKER", required=True)

    rabbitmq = brokers.add_parser(
        "rabbitmq", help="from a definitions export (rabbitmqctl export_definitions)"
    )
    rabbitmq.add_argument("--definitions", required=True, metavar="FILE", help="JSON export")
    rabbitmq.add_argument("--vhost", help="the vhost to import (default: /)")
    _common(rabbitmq)
    rabbitmq.set_defaults(func=_import_rabbitmq)

    kafka = brokers.add_parser("kafka", help="from a cluster's topics and consumer groups")
    kafka.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="a broker")
    kafka.add_argument(
        "--topics", type=_regex, metavar="REGEX", help="import the topics it matches in full"
    )
    kafka.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT_S,
        metavar="DURATION",
        help="give up on an unanswered request after this long (default: %(default)s)",
    )
    _common(kafka)
    kafka.set_defaults(func=_import_kafka)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    parser.add_argument(
        "--prefix",
        type=_prefix,
        default=DEFAULT_PREFIX,
        help="first tokens of every NATS subject (default: %(default)s)",
    )
    parser.add_argument(
        "--routes",
        action="store_true",
        help="write the routes of phase mirror instead of migrations (a bridge that only copies)",
    )


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def _timeout(text: str) -> float:
    """A duration as the config writes them (`2`, `500ms`, `5s`, `1m`), up to an hour."""
    try:
        seconds = float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < seconds <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"expected more than 0 and at most 1h, found {text!r}")
    return seconds


def _prefix(text: str) -> str:
    try:
        return check_subject_prefix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _import_rabbitmq(args: argparse.Namespace) -> int:
    from natsbridge.bridge.importers.rabbitmq import plan_rabbitmq, read_definitions

    command = ["natsbridge", "import", "rabbitmq", "--definitions", Path(args.definitions).name]
    if args.vhost is not None:
        command += ["--vhost", args.vhost]
    definitions = read_definitions(args.definitions)
    plan = plan_rabbitmq(definitions, args.vhost, args.prefix, _command(command, args))
    return _write(plan, args)


def _import_kafka(args: argparse.Namespace) -> int:
    from natsbridge.bridge.importers.kafka import plan_kafka, read_cluster

    command = ["natsbridge", "import", "kafka", "--bootstrap", args.bootstrap]
    if args.topics is not None:
        command += ["--topics", args.topics.pattern]
    topics = read_cluster(args.bootstrap, args.topics, args.timeout)
    return _write(plan_kafka(topics, args.bootstrap, args.prefix, _command(command, args)), args)


def _command(words: list[str], args: argparse.Namespace) -> str:
    if args.prefix != DEFAULT_PREFIX:
        words += ["--prefix", args.prefix]
    if args.routes:
        words.append("--routes")
    return shlex.join(words)


def check(plan: ImportPlan) -> None:
    """Raise ImportFailed unless the config loader accepts both forms of `plan` (phase mirror)."""
    for form in Form:
        problems = validate_text(render(plan, form), plan)
        if problems:
            raise ImportFailed(
                f"the generated config does not validate (a natsbridge bug, please report it): "
                f"{problems[0]}"
            )


def validate_text(text: str, plan: ImportPlan, phase: str = "mirror") -> list[str]:
    """The config loader's problems with `text`, its migrations in `phase` (none: valid).

    The phase is given, not read from a data dir's state: the check is the same wherever it
    runs.
    """
    from natsbridge.bridge.config import load_config
    from natsbridge.bridge.migrate.model import Phase

    phases = {migration.name: Phase(phase) for migration in plan.migrations}
    with tempfile.TemporaryDirectory(prefix="natsbridge-import-") as scratch:
        path = Path(scratch, "imported.yaml")
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path, environ={}, phases=phases)
        except ConfigError as exc:
            return exc.problems
    return []


def _write(plan: ImportPlan, args: argparse.Namespace) -> int:
    check(plan)
    text = render(plan, Form.ROUTES if args.routes else Form.MIGRATIONS)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _replace(Path(args.output), text)
    where = "stdout" if args.output is None else args.output
    skipped = f", {len(plan.skipped)} skipped (see the comments)" if plan.skipped else ""
    count = len(plan.migrations)
    what = ("route" if args.routes else "migration") + ("s" if count != 1 else "")
    print(f"natsbridge import: {count} {what} to {where}{skipped}", file=sys.stderr)
    return 0


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: a reader sees the old file or the whole new one."""
    scratch: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as file:
            scratch = file.name
            file.write(text)
        os.replace(scratch, path)
    except OSError as exc:
        if scratch is not None:
            with contextlib.suppress(OSError):
                os.unlink(scratch)
        raise ImportFailed(f"{path}: cannot write: {exc.strerror}") from None
