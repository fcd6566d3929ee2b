"""`natsbridge migrate status|advance|rollback|history`: move a flow through its phases.

Each command reads the config (`-c`), whose `bridge.data_dir` holds the live phases
(bridge.migrate.state). `advance` checks the step's preconditions
(bridge.migrate.preconditions) and that the next phase's routes are a valid config, records
the change, then asks the running bridge to reload (POST /api/reload on the config's admin
endpoint); a bridge that is not running picks the phase up when it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
import time
from typing import Any

from natsbridge.bridge import secrets
from natsbridge.bridge.config.loader import Config, load_config
from natsbridge.bridge.errors import BridgeError
from natsbridge.bridge.migrate import preconditions, state, verify_cli
from natsbridge.bridge.migrate.lag import lag as lag_of
from natsbridge.bridge.migrate.model import (
    PHASES,
    Migration,
    Phase,
    next_phase,
    previous_phase,
)
from natsbridge.bridge.migrate.parity import close_tap, open_tap
from natsbridge.bridge.migrate.parity import parity as parity_of
from natsbridge.bridge.migrate.reload import reload_running_bridge

EXIT_OK = 0
EXIT_FAILED = 1
HISTORY_SHOWN = 5


class MigrationError(BridgeError):
    """A migrate command cannot do what it was asked (the message says why)."""


def add_parsers(commands: Any) -> None:
    """Register `migrate` and its subcommands."""
    migrate = commands.add_parser("migrate", help="move flows to NATS in phases (issue 17)")
    steps = migrate.add_subparsers(dest="migrate_command", metavar="STEP", required=True)

    status = steps.add_parser("status", help="each migration: phase, lag, what blocks the next")
    status.add_argument("-c", "--config", required=True, help="config file (YAML)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    advance = steps.add_parser("advance", help="move a migration to its next phase")
    advance.add_argument("name", help="migration name")
    advance.add_argument("-c", "--config", required=True, help="config file (YAML)")
    advance.add_argument(
        "--force", action="store_true", help="advance despite failed preconditions (recorded)"
    )
    _common(advance)
    advance.set_defaults(func=_advance)

    rollback = steps.add_parser("rollback", help="move a migration back a phase")
    rollback.add_argument("name", help="migration name")
    rollback.add_argument("-c", "--config", required=True, help="config file (YAML)")
    rollback.add_argument(
        "--to", type=Phase, choices=list(PHASES), help="an earlier phase (default: the previous)"
    )
    rollback.add_argument(
        "--force", action="store_true", help="roll back despite failed preconditions (recorded)"
    )
    _common(rollback)
    rollback.set_defaults(func=_rollback)

    history = steps.add_parser("history", help="the recorded phase changes")
    history.add_argument("name", nargs="?", help="migration name (default: all)")
    history.add_argument("-c", "--config", required=True, help="config file (YAML)")
    history.add_argument("--json", action="store_true", help="print JSON lines")
    history.set_defaults(func=_history)

    verify_cli.add_parser(steps)  # verify: parity of both sides (wip-parity)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", help="why, for the history")
    parser.add_argument(
        "--no-reload", action="store_true", help="do not ask the running bridge to reload"
    )


# ---------------------------------------------------------------- commands


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    recorded = state.read_state(config.bridge.data_dir)
    report = asyncio.run(_status_report(config, recorded))
    if args.json:
        print(json.dumps({"migrations": report}, indent=1))
        return EXIT_OK
    if not report:
        print(f"{config.path}: no migrations")
    for entry in report:
        print(_status_text(entry))
    return EXIT_OK


async def _status_report(config: Config, recorded: dict[str, Any]) -> list[dict[str, Any]]:
    async def one(migration: Migration) -> dict[str, Any]:
        target = next_phase(migration.phase)
        want_parity = migration.phase is Phase.VERIFY  # a RabbitMQ tap records only then
        measured = await preconditions.measure(
            config, migration, lag_of, parity_of, want_lag=True, want_parity=want_parity
        )
        _remember_parity(config, migration, measured)
        blocked = preconditions.blockers(migration, target, measured) if target else []
        since = recorded.get(migration.name, {}).get("since")
        return {
            "name": migration.name,
            "phase": migration.phase.value,
            "since": since,
            "routes": list(migration.route_names),
            "next": target.value if target else None,
            "blocked_by": [secrets.redact(text) for text in blocked],
            "lag": _lag_json(measured.lag),
            "parity": _parity_json(measured.parity),
            "history": state.history(config.bridge.data_dir, migration.name)[-HISTORY_SHOWN:],
        }

    return list(await asyncio.gather(*(one(m) for m in config.migrations)))


def _advance(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    migration = _find(config, args.name)
    target = next_phase(migration.phase)
    if target is None:
        raise MigrationError(f"migration '{migration.name}' is done: nothing to advance to")
    load_config(args.config, phases={migration.name: target})  # the next routes are valid
    return _checked_move(args, config, migration, target)


def _checked_move(
    args: argparse.Namespace, config: Config, migration: Migration, target: Phase
) -> int:
    """Move `migration` to `target` if its preconditions hold (or with --force)."""
    want_lag, want_parity = preconditions.needs(migration.phase, target)
    measured = asyncio.run(
        preconditions.measure(
            config,
            migration,
            lag_of,
            parity_of,
            want_lag=want_lag,
            want_parity=want_parity,
            lag_samples=preconditions.LAG_SAMPLES,
        )
    )
    _remember_parity(config, migration, measured)
    blocked = [secrets.redact(text) for text in preconditions.blockers(migration, target, measured)]
    if blocked and not args.force:
        for text in blocked:
            print(f"blocked: {text}", file=sys.stderr)
        print(
            f"natsbridge: {migration.name} stays in {migration.phase} "
            f"({len(blocked)} precondition{'s' if len(blocked) != 1 else ''} of {target} "
            "failed; --force to move anyway)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    reason = args.reason
    if blocked:
        reason = "; ".join(filter(None, [reason, "forced past: " + "; ".join(blocked)]))
        print(f"warning: forced past: {'; '.join(blocked)}", file=sys.stderr)
    return _move(args, config, migration, target, forced=bool(blocked), reason=reason)


def _rollback(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    migration = _find(config, args.name)
    target = args.to or previous_phase(migration.phase)
    if target is None or PHASES.index(target) >= PHASES.index(migration.phase):
        raise MigrationError(
            f"migration '{migration.name}' is in {migration.phase}: "
            f"rollback goes to an earlier phase, found {target or 'none'}"
        )
    load_config(args.config, phases={migration.name: target})
    return _checked_move(args, config, migration, target)


def _history(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.name is not None:
        _find(config, args.name)
    for change in state.history(config.bridge.data_dir, args.name):
        if args.json:
            print(json.dumps(change, sort_keys=True))
            continue
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(change.get("time", 0)))
        forced = " FORCED" if change.get("forced") else ""
        why = f" — {change['reason']}" if change.get("reason") else ""
        print(
            f"{when} {change.get('migration')}: {change.get('from')} -> {change.get('to')} "
            f"by {change.get('who')}{forced}{why}"
        )
    return EXIT_OK


# ---------------------------------------------------------------- helpers


def _move(
    args: argparse.Namespace,
    config: Config,
    migration: Migration,
    target: Phase,
    *,
    forced: bool,
    reason: str,
) -> int:
    """Record `migration` moving to `target`, then reload the running bridge."""
    data_dir = config.bridge.data_dir
    with state.locked(data_dir):
        live = state.read_phases(data_dir).get(migration.name, migration.spec.phase)
        if live is not migration.phase:
            raise MigrationError(
                f"migration '{migration.name}' moved to {live} meanwhile: run the command again"
            )
        state.record(
            data_dir,
            migration.name,
            migration.phase,
            target,
            who="cli",
            forced=forced,
            reason=reason,
        )
    print(f"{migration.name}: {migration.phase} -> {target}{' (forced)' if forced else ''}")
    _parity_tap(config, migration, target)
    if not args.no_reload:
        print(reload_running_bridge(config))
    return EXIT_OK


def _parity_tap(config: Config, migration: Migration, target: Phase) -> None:
    """Open the parity tap when entering verify, close it when leaving (after the step)."""
    if (migration.phase is Phase.VERIFY) == (target is Phase.VERIFY):
        return
    step = open_tap if target is Phase.VERIFY else close_tap
    what = "start" if target is Phase.VERIFY else "stop"
    try:
        asyncio.run(step(config, migration))
    except Exception as exc:  # a broker error of any client library: the phase is recorded
        text = secrets.redact(f"{type(exc).__name__}: {exc}")
        print(f"warning: could not {what} the parity tap ({text})", file=sys.stderr)


def _find(config: Config, name: str) -> Migration:
    by_name = {migration.name: migration for migration in config.migrations}
    found = by_name.get(name)
    if found is None:
        close = difflib.get_close_matches(name, list(by_name), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        known = ", ".join(by_name) or "none"
        raise MigrationError(f"no migration named {name!r}{hint} (defined: {known})")
    return found


def _remember_parity(
    config: Config, migration: Migration, measured: preconditions.Measured
) -> None:
    parity = measured.parity
    if parity is not None and not isinstance(parity, str):
        state.remember_parity(config.bridge.data_dir, migration.name, parity.ok)


def _lag_json(lag: preconditions.LagLike | str | None) -> dict[str, Any] | None:
    if lag is None:
        return None
    if isinstance(lag, str):
        return {"error": secrets.redact(lag)}
    return {"legacy": lag.legacy, "nats": lag.nats}


def _parity_json(parity: preconditions.ParityLike | str | None) -> dict[str, Any] | None:
    if parity is None:
        return None
    if isinstance(parity, str):
        return {"error": secrets.redact(parity)}
    return parity.to_json()


def _status_text(entry: dict[str, Any]) -> str:
    lag = entry["lag"] or {}
    lag_text = (
        f"lag legacy {lag.get('legacy', '?')} nats {lag.get('nats', '?')}"
        if "error" not in lag
        else f"lag unknown ({lag['error']})"
    )
    parity = entry["parity"]
    parity_text = ""
    if parity is not None:
        parity_text = (
            f", parity unknown ({parity['error']})"
            if "error" in parity
            else f", parity {'ok' if parity['ok'] else 'DIFFERS'}"
        )
    lines = [f"{entry['name']}: {entry['phase']} ({', '.join(entry['routes']) or 'no routes'})"]
    lines.append(f"  {lag_text}{parity_text}")
    if entry["next"] is None:
        lines.append("  done")
    elif entry["blocked_by"]:
        lines.extend(f"  {entry['next']} blocked: {text}" for text in entry["blocked_by"])
    else:
        lines.append(f"  ready for {entry['next']}: natsbridge migrate advance {entry['name']}")
    return "\n".join(lines)
