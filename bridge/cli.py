"""The `natsbridge` command line.

Exit codes: 0 success; 1 the command failed (invalid config, unmappable address, a
route that could not start); 2 usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from bridge import __version__, secrets
from bridge.errors import BridgeError, ConfigError

EXIT_OK = 0
EXIT_FAILED = 1

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="natsbridge",
        description="Bridge RabbitMQ, Kafka and STOMP brokers to NATS and JetStream.",
    )
    parser.add_argument("--version", action="version", version=f"natsbridge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="check a config file and list its routes")
    validate.add_argument("-c", "--config", required=True, help="config file (YAML)")
    validate.set_defaults(func=_validate)

    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(func=_schema)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return EXIT_FAILED
    except BridgeError as exc:
        print(f"natsbridge: {secrets.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


def _validate(args: argparse.Namespace) -> int:
    from bridge.config import load_config
    from bridge.config.describe import describe_route

    config = load_config(args.config)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.path}: valid, bridge '{config.bridge.id}', {len(config.routes)} routes")
    for route in config.routes:
        print(secrets.redact(f"  {describe_route(route)}"))
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from bridge.config.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK
