"""Operator commands for the embedded buffer: `natsbridge buffer` and `natsbridge dlq`.

    natsbridge buffer --data-dir DIR [--json] [--check]
    natsbridge dlq ls --data-dir DIR [--json]
    natsbridge dlq show STREAM --data-dir DIR [--from-seq N] [--limit N] [--json]
    natsbridge dlq replay STREAM --data-dir DIR (--seq N ... | --all)

`-c CONFIG` may replace `--data-dir`: the config's `bridge.data_dir` is used, and nothing
else of the file is resolved (its broker passwords need not be set). `buffer` lists the
bridge's own buffer (one stream per route), not JetStream; `streams` is its old name,
kept as a deprecated alias that says so. `buffer`, `dlq ls` and `dlq show` only read,
and work while the bridge runs. `--check` runs SQLite's integrity check and the store's
own counter check. `dlq replay` moves dead letters back into the stream they came from
and needs the bridge stopped (the data dir has one writer). STREAM is a stream (its
dead-letter stream is used) or a dead-letter stream itself.

Exit codes: 0 success; 1 failure, or problems found by --check.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from natsbridge.bridge.broker.config import StoredMessage, StreamInfo
from natsbridge.bridge.broker.store import Store
from natsbridge.bridge.errors import BridgeError, ConfigError, NotFound
from natsbridge.bridge.logs import plural
from natsbridge.mappings.headers import (
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_DELIVERIES,
    BRIDGE_REASON,
)

EXIT_OK = 0
EXIT_FAILED = 1
PREVIEW_BYTES = 120

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
        buffer.set_defaults(func=_guarded(buffer_command), deprecated_name=name == "streams")

    dlq = subparsers.add_parser("dlq", help="list, show and replay dead letters")
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="dead-letter streams and how many messages they hold")
    _where(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_guarded(dlq_ls))
    show = actions.add_parser("show", help="the dead letters of a stream, with their reasons")
    _where(show)
    show.add_argument("stream", help="a stream, or its dead-letter stream")
    show.add_argument("--from-seq", type=int, default=1, help="first sequence to show")
    show.add_argument("--limit", type=int, default=20, help="most messages to show")
    show.add_argument("--json", action="store_true", help="print JSON (payloads in base64)")
    show.set_defaults(func=_guarded(dlq_show))
    replay = actions.add_parser(
        "replay", help="move dead letters back into their stream (bridge stopped)"
    )
    _where(replay)
    replay.add_argument("stream", help="a stream, or its dead-letter stream")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--seq", type=int, action="append", help="a dead letter's sequence")
    which.add_argument("--all", action="store_true", help="every dead letter")
    replay.set_defaults(func=_guarded(dlq_replay))


def _where(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--data-dir", help="the bridge's data directory")
    group.add_argument("-c", "--config", help="config file whose bridge.data_dir to use")


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    from natsbridge.bridge.config.sections import read_data_dir

    return read_data_dir(args.config)


def _guarded(command: Command) -> Command:
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


def _table(rows: list[list[str]]) -> str:
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
    header, *body = _table(rows).splitlines()
    out.append(header)
    for info, line in zip(infos, body, strict=True):
        out.append(line)
        out.extend(f"    {detail}" for detail in details[info.name])
    return "\n".join(out)


def _message_dict(m: StoredMessage) -> dict[str, Any]:
    return {
        "stream": m.stream,
        "seq": m.seq,
        "time": m.time,
        "subject": m.subject,
        "msg_id": m.msg_id,
        "headers": m.headers,
        "payload_base64": base64.b64encode(m.payload).decode(),
    }


def format_dead_letter(m: StoredMessage, now: float) -> str:
    """A dead letter as a few readable lines."""

    def first(name: str) -> str:
        return m.headers.get(name, ["-"])[0]

    preview = m.payload[:PREVIEW_BYTES]
    more = f" … ({len(m.payload)} bytes)" if len(m.payload) > PREVIEW_BYTES else ""
    origin = first(BRIDGE_DEAD_LETTER_STREAM)
    seq = first(BRIDGE_DEAD_LETTER_SEQ)
    where = f"{origin} seq {seq}" if seq != "-" else f"{origin} (never buffered)"
    other = {k: v for k, v in m.headers.items() if not k.startswith("Bridge-Dead-Letter")}
    other.pop(BRIDGE_REASON, None)
    other.pop(BRIDGE_DELIVERIES, None)
    lines = [
        f"#{m.seq}  {age(now - m.time)} ago  subject {m.subject!r}",
        f"    reason: {first(BRIDGE_REASON)}",
        f"    from: {where}, deliveries {first(BRIDGE_DELIVERIES)}",
    ]
    if m.msg_id:
        lines.append(f"    msg id: {m.msg_id}")
    if other:
        lines.append(f"    headers: {json.dumps(other, ensure_ascii=False)}")
    lines.append(f"    payload: {preview!r}{more}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- commands


def _read_only(args: argparse.Namespace) -> Store:
    return Store.open(_data_dir(args), read_only=True)


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


def _dead_letter_stream(store: Store, name: str) -> str:
    """`name` if it is a dead-letter stream, else the dead-letter stream of stream `name`."""
    configs = {c.name: c for c in store.stream_configs()}
    if name not in configs:
        raise NotFound(f"no stream {name!r} (streams: {', '.join(sorted(configs)) or 'none'})")
    target = configs[name].dead_letter
    return target if target is not None else name


def dlq_ls(args: argparse.Namespace) -> int:
    """`natsbridge dlq ls`: each stream's dead-letter stream and what it holds."""
    store = _read_only(args)
    try:
        pairs = [(c.name, c.dead_letter) for c in store.stream_configs() if c.dead_letter]
        infos = [(stream, store.stream_info(dlq)) for stream, dlq in pairs]
    finally:
        store.close()
    entries = [
        {
            "stream": stream,
            "dead_letters": info.name,
            "messages": info.messages,
            "bytes": info.bytes,
            "oldest_age": info.oldest_age,
        }
        for stream, info in infos
    ]
    if args.json:
        print(json.dumps({"dead_letters": entries}, indent=2))
    elif not entries:
        print("no stream has a dead-letter stream")
    else:
        rows = [["STREAM", "DEAD LETTERS", "MESSAGES", "BYTES", "OLDEST"]]
        for stream, info in infos:
            rows.append(
                [stream, info.name, str(info.messages), size(info.bytes), age(info.oldest_age)]
            )
        print(_table(rows))
    return EXIT_OK


def dlq_show(args: argparse.Namespace) -> int:
    """`natsbridge dlq show`: the dead letters, reason first."""
    import time

    store = _read_only(args)
    try:
        dlq = _dead_letter_stream(store, args.stream)
        messages = store.messages(dlq, args.from_seq, args.limit)
        total = store.stream_info(dlq).messages
    finally:
        store.close()
    if args.json:
        print(json.dumps({"stream": dlq, "messages": [_message_dict(m) for m in messages]}))
        return EXIT_OK
    if not messages:
        print(
            f"{dlq}: no dead letters" + (f" from seq {args.from_seq}" if args.from_seq > 1 else "")
        )
        return EXIT_OK
    now = time.time()
    print(f"{dlq}: showing {len(messages)} of {total}")
    for m in messages:
        print(format_dead_letter(m, now))
    return EXIT_OK


def dlq_replay(args: argparse.Namespace) -> int:
    """`natsbridge dlq replay`: move dead letters back into the stream they came from."""
    store = Store.open(_data_dir(args), create=False)
    try:
        dlq = _dead_letter_stream(store, args.stream)
        moved = store.replay(dlq, None if args.all else args.seq)
        store.commit()
        left = store.stream_info(dlq).messages
    finally:
        store.close()
    by_stream: dict[str, int] = {}
    for ack in moved:
        by_stream[ack.stream] = by_stream.get(ack.stream, 0) + 1
    for stream, count in sorted(by_stream.items()):
        print(f"replayed {plural(count, 'message')} from {dlq} into {stream}")
    if not moved:
        print(f"{dlq}: nothing replayed")
    not_moved = left if args.all else len(set(args.seq)) - len(moved)
    if not_moved:
        what = (
            f"{plural(not_moved, 'dead letter')} left"
            if args.all
            else f"{plural(not_moved, 'sequence')} not replayed"
        )
        print(
            f"{what}: not in {dlq}, or never buffered (for example unmappable input), "
            "so there is no stream to put them back into"
        )
    return EXIT_OK
