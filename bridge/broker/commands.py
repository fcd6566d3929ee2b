"""Operator commands for the embedded buffer: `natsbridge buffer` (and, registered with
it, `natsbridge dlq`: bridge.admin.dlq).

    natsbridge buffer --data-dir DIR [--json] [--check]

`-c CONFIG` may replace `--data-dir`: the config's `bridge.data_dir` is used, and nothing
else of the file is resolved (its broker passwords need not be set). `buffer` lists the
bridge's own buffer (one stream per route), not JetStream; `streams` is its old name,
kept as a deprecated alias that says so. It only reads, and works while the bridge
runs. `--check` runs SQLite's integrity check and the store's own counter check.

Exit codes: 0 success; 1 failure, or problems found by --check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from natsbridge.bridge.broker.config import StreamInfo
from natsbridge.bridge.broker.store import Store
from natsbridge.bridge.errors import BridgeError, ConfigError
from natsbridge.bridge.logs import plural

EXIT_OK = 0
EXIT_FAILED = 1

Command = Callable[[argparse.Namespace], int]


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `buffer` (alias `streams`, deprecated) and `dlq` subcommands (each sets `func`)."""
    for name, help_text in (
        ("buffer", "list the bridge's buffer: a stream per route, its consumer and dead letters"),
        ("streams", "deprecated name of `buffer`"),
    ):
        buffer = subparsers.add_parser(name, help=help_text)
        _where(buffer)
        buffer.add_argument("--json", action="store_true", help="print JSON")
        buffer.add_argument(
            "--check", action="store_true", help="run SQLite's integrity check on the buffer"
        )
        buffer.set_defaults(func=guarded(buffer_command), deprecated_name=name == "streams")

    from natsbridge.bridge.admin.dlq import add_parsers as add_dlq_parsers

    add_dlq_parsers(subparsers)


def _where(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--data-dir", help="the bridge's data directory")
    group.add_argument("-c", "--config", help="config file whose bridge.data_dir to use")


def data_dir_of(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    from natsbridge.bridge.config.sections import read_data_dir

    return read_data_dir(args.config)


def guarded(command: Command) -> Command:
    """Report BridgeError as one line on stderr and exit 1 (as the main CLI does).

    A ConfigError (from `-c`) goes on to the main CLI, which prints each of its problems.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ConfigError:
            raise
        except BridgeError as exc:
            print(f"natsbridge: {exc}", file=sys.stderr)
            return EXIT_FAILED

    run.__doc__ = command.__doc__
    return run


# ---------------------------------------------------------------------- formatting


def age(seconds: float | None) -> str:
    """A short human duration: 42s, 3m12s, 2h05m, 4d03h; '-' for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_streams(infos: list[StreamInfo]) -> str:
    """The text view of `natsbridge buffer`."""
    if not infos:
        return "no streams"
    rows = [["STREAM", "RETENTION", "MESSAGES", "BYTES", "FIRST", "LAST", "OLDEST"]]
    details: dict[str, list[str]] = {}
    for info in infos:
        rows.append(
            [
                info.name,
                info.config.retention.value,
                str(info.messages),
                size(info.bytes),
                str(info.first_seq),
                str(info.last_seq),
                age(info.oldest_age),
            ]
        )
        lines = details[info.name] = []
        if info.config.dead_letter:
            lines.append(f"dead letters -> {info.config.dead_letter}")
        for c in info.consumers:
            lines.append(
                f"consumer {c.name}: pending {c.num_pending}, ack pending {c.num_ack_pending}, "
                f"ack floor {c.ack_floor}, redelivered {c.num_redelivered}, "
                f"dead-lettered {c.num_dead_lettered}, oldest unacked {age(c.oldest_age)}"
            )
    out = []
    header, *body = text_table(rows).splitlines()
    out.append(header)
    for info, line in zip(infos, body, strict=True):
        out.append(line)
        out.extend(f"    {detail}" for detail in details[info.name])
    return "\n".join(out)


# ---------------------------------------------------------------------- commands


def _read_only(args: argparse.Namespace) -> Store:
    return Store.open(data_dir_of(args), read_only=True)


def buffer_command(args: argparse.Namespace) -> int:
    """`natsbridge buffer`: streams, consumers and (with --check) the file's integrity."""
    if getattr(args, "deprecated_name", False):
        print("natsbridge: `streams` is deprecated, use `natsbridge buffer`", file=sys.stderr)
    store = _read_only(args)
    try:
        if args.check:
            problems = store.integrity_check()
            if args.json:
                print(
                    json.dumps({"path": str(store.path), "ok": not problems, "problems": problems})
                )
            elif problems:
                print(f"{store.path}: {plural(len(problems), 'problem')}")
                for problem in problems:
                    print(f"  {problem}")
            else:
                print(f"{store.path}: ok")
            return EXIT_FAILED if problems else EXIT_OK
        infos = store.streams()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"streams": [info.to_dict() for info in infos]}, indent=2))
    else:
        print(format_streams(infos))
    return EXIT_OK
