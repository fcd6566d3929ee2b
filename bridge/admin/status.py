"""`natsbridge status`: the routes table, read from a running bridge's admin endpoint.

    natsbridge status [-c FILE | --admin URL] [--token T | --token-file F] [--json]
                      [--watch SECONDS] [--wide]

`-c` reads `bridge.admin` (listen, token, tls) from the config, and nothing else of it;
`--admin` takes `host:port` or an http(s) URL. The token comes from `--token`,
`--token-file`, `$NATSBRIDGE_ADMIN_TOKEN` or the config, in that order.

`--watch` polls until Ctrl-C (exit 0). A failed poll shows the error with its time and
the next poll tries again, so the screen outlives a bridge restart. On a terminal each
refresh redraws the screen; into a file or pipe each one is appended as plain text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from natsbridge.bridge.admin.control import (
    AdminUnavailable,
    add_target_options,
    admin_request,
    target,
)
from natsbridge.bridge.logs import plural

EXIT_OK = 0
ERROR_WIDTH = 60  # characters of LAST ERROR shown without --wide
CLEAR_SCREEN = "\033[H\033[2J"
COLUMNS = ("ROUTE", "STATE", "IN/s", "OUT/s", "DELIVERED", "BUFFER", "OLDEST", "DEAD", "LAST ERROR")
LEGEND = """\
STATE    starting, connecting, running, reconnecting (a connection was lost), paused (the
         buffer takes no writes: source held back), draining, stopped, failed (retried
         with back-off; see LAST ERROR)
!        not ready (/readyz answers 503); !source, !sink: that end is not connected
IN/s     messages per second read (OUT/s: confirmed) over the last second, and in
         brackets the average of the last minute
BUFFER   messages buffered, not yet confirmed; OLDEST: the age of the oldest of them
DEAD     messages dead-lettered (natsbridge dlq show)"""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `status` subcommand."""
    status = commands.add_parser("status", help="show a running bridge's routes")
    add_target_options(status)
    status.add_argument("--json", action="store_true", help="print /api/routes as JSON")
    status.add_argument(
        "--watch", type=_seconds, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    status.add_argument("--wide", action="store_true", help="show the whole last error")
    status.set_defaults(func=status_command)


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:  # also false for NaN
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 86400, found {text!r}")
    return value


def fetch_routes(admin_url: str, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """GET `<admin_url>/api/routes` as JSON (AdminUnavailable when refused)."""
    result: dict[str, Any] = admin_request(admin_url, "/api/routes", token, timeout=timeout)
    return result


def shorten(text: str, width: int = ERROR_WIDTH) -> str:
    """`text` cut at a word boundary to at most `width` characters, marked with `…`."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > width // 2 else cut).rstrip(" ,;:") + "…"


def _not_ready(route: dict[str, Any]) -> str:
    """`` !source``, `` !sink``, `` !source+sink`` or `` !`` for a route not ready."""
    if route["ready"]:
        return ""
    down = [end for end in ("source", "sink") if not route.get(end, {}).get("connected", True)]
    return " !" + "+".join(down)


def _rate(now: float, average: float | None) -> str:
    return f"{now:.0f}" if average is None else f"{now:.0f} ({average:.0f})"


def render_table(routes: list[dict[str, Any]], wide: bool = False) -> str:
    """A plain-text table, one row per route."""
    rows = [COLUMNS]
    for route in routes:
        error = route["last_error"]["message"] if route.get("last_error") else ""
        age = route["buffer"]["oldest_age_s"]
        rates = route["rates"]
        rows.append(
            (
                route["name"],
                route["state"] + _not_ready(route),
                _rate(rates["in_per_s"], rates.get("in_avg_per_s")),
                _rate(rates["out_per_s"], rates.get("out_avg_per_s")),
                str(route["counters"]["delivered"]),
                str(route["buffer"]["depth"]),
                f"{age:.1f}s" if age is not None else "-",
                str(sum(route["counters"]["dead_lettered"].values())),
                error if wide else shorten(error),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def summary(routes: list[dict[str, Any]]) -> str:
    """`3 routes, 2 ready` (and how many failed)."""
    ready = sum(1 for route in routes if route["ready"])
    failed = sum(1 for route in routes if route["state"] == "failed")
    return f"{plural(len(routes), 'route')}, {ready} ready" + (
        f", {failed} failed" if failed else ""
    )


def _clock() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def status_command(args: argparse.Namespace) -> int:
    """Print the routes once, or every `--watch` seconds until Ctrl-C."""
    url, token = target(args)
    if not args.watch:
        body = fetch_routes(url, token)
        print(json.dumps(body, indent=1) if args.json else _screen(body, args.wide))
        return EXIT_OK
    terminal = sys.stdout.isatty() and not args.json
    try:
        while True:
            try:
                body = fetch_routes(url, token)
                shown = (
                    json.dumps(body)
                    if args.json
                    else f"{url}  {_clock()}\n{_screen(body, args.wide)}"
                )
            except AdminUnavailable as exc:
                shown = f"{_clock()}  {exc}; trying again in {args.watch:g}s"
                if args.json:
                    shown = json.dumps({"error": str(exc), "at": time.time()})
            if terminal:
                print(CLEAR_SCREEN + shown, flush=True)
            else:
                print(shown + ("" if args.json else "\n"), flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK


def _screen(body: dict[str, Any], wide: bool) -> str:
    routes = body["routes"]
    return f"{render_table(routes, wide)}\n{summary(routes)}\n\n{LEGEND}"
