"""`natsbridge dlq ls|show|replay|purge`: dead letters, while the bridge runs or not.

    natsbridge dlq ls      (-c FILE | --admin URL | --data-dir DIR) [--json]
    natsbridge dlq show    STREAM (...) [--from-seq N] [--limit N] [--json]
    natsbridge dlq replay  STREAM (...) (--seq N ... | --all) [--json]
    natsbridge dlq replay  ROUTE (-c FILE | --admin URL) --destination [--limit N]
    natsbridge dlq purge   STREAM (...) (--seq N ... | --all) [--json]

With `-c FILE` the bridge's admin endpoint (`bridge.admin`, its token) is asked; when no
bridge answers there, the data dir's file is used instead (`bridge.data_dir`; nothing
else of the file is resolved). `--admin` asks only the endpoint, `--data-dir` only the
file (which `replay` and `purge` can only change while the bridge is stopped). STREAM
is a route's stream (its dead-letter stream is used) or a dead-letter stream.

`replay` puts a dead letter that was buffered back into its stream, and maps an intake
dead letter (one that could not be mapped: fix the config, reload, then replay) again
through its route, which only a running bridge can do. `replay --destination` reads a
route's `dead_letters:` destination back into the route (bridge.runtime.dead_letter_replay),
also only while it runs. Exit codes: 0 done; 1 when a
dead letter asked for was not replayed (each with the reason) or on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from typing import Any

from natsbridge.bridge.admin.control import (
    AdminUnreachable,
    admin_request,
    parse_admin_url,
    target,
)
from natsbridge.bridge.broker.commands import (
    EXIT_FAILED,
    EXIT_OK,
    age,
    data_dir_of,
    guarded,
    size,
    text_table,
)
from natsbridge.bridge.broker.config import StoredMessage
from natsbridge.bridge.broker.store import Store
from natsbridge.bridge.logs import plural
from natsbridge.bridge.runtime.dead_letter_admin import DeadLetterAdmin, LocalStore, stored_message
from natsbridge.mappings.headers import (
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_DELIVERIES,
    BRIDGE_REASON,
)

WRITES = ("replay", "purge")
PREVIEW_BYTES = 120  # of a dead letter's payload, in `show`
ADMIN_TIMEOUT_S = 60.0  # a replay of many dead letters through the buffer
DESTINATION_TIMEOUT_S = 600.0  # a replay from a destination: a Kafka group join, the reads


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq` and its actions (each sets `func`)."""
    dlq = subparsers.add_parser("dlq", help="list, show, replay and purge dead letters")
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="dead-letter streams and how many messages they hold")
    _options(ls)
    show = actions.add_parser("show", help="the dead letters of a stream, with their reasons")
    _options(show, stream=True)
    show.add_argument("--from-seq", type=int, default=1, help="first sequence to show")
    show.add_argument("--limit", type=int, default=20, help="most messages to show")
    for verb, text in (
        ("replay", "put dead letters back into their route (running or stopped bridge)"),
        ("purge", "delete dead letters for good"),
    ):
        action = actions.add_parser(verb, help=text)
        _options(action, stream=True)
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument("--seq", type=int, action="append", help="a dead letter's sequence")
        which.add_argument("--all", action="store_true", help="every dead letter")
        if verb == "replay":
            which.add_argument(
                "--destination",
                action="store_true",
                help="from ROUTE's dead_letters: destination (JetStream stream, Kafka topic)",
            )
            action.add_argument(
                "--limit", type=int, default=10_000, help="with --destination: most to move"
            )


def _options(parser: argparse.ArgumentParser, stream: bool = False) -> None:
    if stream:
        parser.add_argument("stream", help="a route's stream, or its dead-letter stream")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", help="config: its admin endpoint, else its data_dir")
    where.add_argument(
        "--admin", type=parse_admin_url, help="ask only the running bridge at HOST:PORT or URL"
    )
    where.add_argument("--data-dir", help="read only the data directory's file")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token (default: $NATSBRIDGE_ADMIN_TOKEN)")
    token.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=guarded(dlq_command))


def dlq_command(args: argparse.Namespace) -> int:
    """Run one `dlq` action on the running bridge or the data dir, print the outcome."""
    asked = _request(args)
    answer = _ask_bridge(args, asked)
    if answer is None:
        answer = asyncio.run(_local(args, asked))
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(_PRINTERS[asked["action"]](answer))
    refused = answer.get("not_replayed") or answer.get("stopped")
    return EXIT_FAILED if refused else EXIT_OK


def _request(args: argparse.Namespace) -> dict[str, Any]:
    action = args.dlq_command
    asked: dict[str, Any] = {"action": action}
    if action == "show":
        asked.update(stream=args.stream, from_seq=args.from_seq, limit=args.limit)
    elif getattr(args, "destination", False):
        asked.update(stream=args.stream, destination=True, limit=args.limit)
    elif action in WRITES:
        asked.update(stream=args.stream, seqs=None if args.all else args.seq)
    return asked


def _ask_bridge(args: argparse.Namespace, asked: dict[str, Any]) -> dict[str, Any] | None:
    """The running bridge's answer; None to use the data dir (it is stopped, or not asked)."""
    if args.data_dir:
        return None
    if args.config:
        from natsbridge.bridge.config.sections import read_admin

        if not read_admin(args.config).enabled:
            return None
    url, token = target(args)
    try:
        method = "POST" if asked["action"] in WRITES else "GET"
        timeout = DESTINATION_TIMEOUT_S if asked.get("destination") else ADMIN_TIMEOUT_S
        answer: dict[str, Any] = admin_request(url, _path(asked), token, method, timeout)
    except AdminUnreachable:
        if args.admin:
            raise
        print(f"natsbridge: no bridge answers at {url}: using the data dir", file=sys.stderr)
        return None
    return answer


def _path(asked: dict[str, Any]) -> str:
    action = asked["action"]
    if action == "ls":
        return "/api/dlq"
    stream = urllib.parse.quote(asked["stream"], safe="")
    if action == "show":
        return f"/api/dlq/{stream}?from_seq={asked['from_seq']}&limit={asked['limit']}"
    if asked.get("destination"):
        return f"/api/dlq/{stream}/replay?destination=1&limit={asked['limit']}"
    seqs = asked["seqs"]
    query = "all=1" if seqs is None else urllib.parse.urlencode({"seq": seqs}, doseq=True)
    return f"/api/dlq/{stream}/{action}?{query}"


async def _local(args: argparse.Namespace, asked: dict[str, Any]) -> dict[str, Any]:
    writes = asked["action"] in WRITES
    store = (
        Store.open(data_dir_of(args), create=False)
        if writes
        else Store.open(data_dir_of(args), read_only=True)
    )
    try:
        return await DeadLetterAdmin(LocalStore(store)).run(asked)
    finally:
        store.close()


# ---------------------------------------------------------------------- printing


def _print_ls(answer: dict[str, Any]) -> str:
    entries = answer["dead_letters"]
    if not entries:
        return "no stream has a dead-letter stream"
    rows = [["STREAM", "DEAD LETTERS", "MESSAGES", "BYTES", "OLDEST"]]
    for e in entries:
        rows.append(
            [
                e["stream"],
                e["dead_letters"],
                str(e["messages"]),
                size(e["bytes"]),
                age(e["oldest_age"]),
            ]
        )
    return text_table(rows)


def _print_show(answer: dict[str, Any]) -> str:
    dlq, messages = answer["stream"], answer["messages"]
    if not messages:
        return f"{dlq}: no dead letters"
    now = time.time()
    lines = [f"{dlq}: showing {len(messages)} of {answer['total']}"]
    lines.extend(format_dead_letter(stored_message(m), now) for m in messages)
    return "\n".join(lines)


def _print_replay(answer: dict[str, Any]) -> str:
    if "route" in answer:  # from the route's dead_letters: destination
        moved = plural(answer["replayed"], "dead letter")
        lines = [f"replayed {moved} from {answer['route']}'s dead_letters destination"]
        if "stopped" in answer:
            lines.append(f"stopped at one that cannot be replayed: {answer['stopped']}")
        return "\n".join(lines)
    dlq = answer["stream"]
    lines = [
        f"replayed {plural(count, 'message')} from {dlq} into {into}"
        for into, count in sorted(answer["replayed"].items())
    ]
    if not lines:
        lines.append(f"{dlq}: nothing replayed")
    for refused in answer["not_replayed"]:
        lines.append(f"not replayed: #{refused['seq']}: {refused['reason']}")
    lines.append(f"{plural(answer['left'], 'dead letter')} left in {dlq}")
    return "\n".join(lines)


def _print_purge(answer: dict[str, Any]) -> str:
    dlq = answer["stream"]
    return f"purged {plural(answer['purged'], 'dead letter')} from {dlq}, {answer['left']} left"


_PRINTERS = {"ls": _print_ls, "show": _print_show, "replay": _print_replay, "purge": _print_purge}


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
