"""`natsbridge migrate verify NAME -c FILE [--window 10m] [--json]`: parity, both sides.

Counts and digests per group (Kafka partition, tapped exchange) on each side over the
window, then every missing, extra and different message with its coordinates
(topic/partition/offset, ledger entry/exchange/routing key/message id, stream/sequence).
Exit 0 when parity holds, 1 when it does not or a side could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from natsbridge.bridge.config.loader import load_config
from natsbridge.bridge.config.units import MAX_SECONDS, parse_duration
from natsbridge.bridge.errors import BridgeError
from natsbridge.bridge.migrate.compare import Coordinates, ParityReport
from natsbridge.bridge.migrate.parity import parity
from natsbridge.bridge.registry import did_you_mean

EXIT_OK = 0
EXIT_DIFFERS = 1
LISTED_MAX = 50  # coordinates printed per kind of difference (all of them with --json)


def add_parser(steps: Any) -> None:
    """Register `verify` among the `migrate` steps."""
    verify = steps.add_parser(
        "verify", help="count and hash both sides over a window; list missing and extra"
    )
    verify.add_argument("name", help="migration name")
    verify.add_argument("-c", "--config", required=True, help="config file (YAML)")
    verify.add_argument(
        "--window", type=_window, help="how far back, e.g. 10m (default: the verify.window)"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_verify)


def _window(text: str) -> float:
    """A duration such as 90s, 10m or 1h (argparse type)."""
    try:
        seconds = float(parse_duration(text if text[-1:].isalpha() else f"{text}s"))
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 10m or 1h, found {text!r}"
        )
    return seconds


def _verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    by_name = {migration.name: migration for migration in config.migrations}
    migration = by_name.get(args.name)
    if migration is None:
        known = ", ".join(by_name) or "none"
        raise BridgeError(
            f"no migration named {args.name!r}{did_you_mean(args.name, by_name)} (defined: {known})"
        )
    report = asyncio.run(parity(config, migration, args.window))
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(render(report))
    return EXIT_OK if report.ok else EXIT_DIFFERS


def render(report: ParityReport) -> str:
    """The report as text: a verdict, counts per side and group, then the differences."""
    verdict = "parity holds" if report.ok else "parity DIFFERS"
    lines = [f"{report.migration}: {verdict} over the last {_duration(report.window_s)}"]
    groups = sorted({g for side in report.counts.values() for g in side})
    width = max((len(g) for g in groups), default=0)
    for group in groups:
        legacy = report.counts["legacy"].get(group, 0)
        nats = report.counts["nats"].get(group, 0)
        same = report.digests["legacy"].get(group) == report.digests["nats"].get(group)
        mark = "=" if same and legacy == nats else "≠"
        lines.append(f"  {group:<{width}}  legacy {legacy:>7}  {mark}  nats {nats:>7}")
    lines.append(
        f"  pending {report.pending} (not copied yet), duplicates {report.duplicates}, "
        f"missing {len(report.missing)}, extra {len(report.extra)}, different {len(report.differ)}"
    )
    for title, found in (
        ("missing (legacy only)", report.missing),
        ("extra (NATS only)", report.extra),
    ):
        lines.extend(_listed(title, found))
    lines.extend(
        _listed(
            "different", [{**pair["legacy"], "vs": _where(pair["nats"])} for pair in report.differ]
        )
    )
    return "\n".join(lines)


def _listed(title: str, found: list[Coordinates]) -> list[str]:
    if not found:
        return []
    lines = [f"  {title}:"]
    lines.extend(f"    {_where(where)}" for where in found[:LISTED_MAX])
    if len(found) > LISTED_MAX:
        lines.append(f"    … and {len(found) - LISTED_MAX} more (--json lists all)")
    return lines


def _where(where: Coordinates) -> str:
    return " ".join(f"{key} {value}" for key, value in where.items() if value is not None)


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"
