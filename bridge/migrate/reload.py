"""Ask the bridge running a config to reload it, so that a phase change takes effect."""

from __future__ import annotations

from natsbridge.bridge.admin.control import AdminUnavailable, reload_running
from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.errors import ConfigError

LATER = "the new phase applies when the bridge starts (or on SIGHUP)"


def reload_running_bridge(config: Config) -> str:
    """POST /api/reload to the config's admin endpoint; one line saying what happened."""
    try:
        changed = reload_running(config.bridge.admin)
    except AdminUnavailable as exc:
        return f"no running bridge reloaded ({exc}): {LATER}"
    except ConfigError as exc:
        return f"the running bridge refused the reload ({'; '.join(exc.problems)}): {LATER}"
    parts = [
        f"{what} {', '.join(changed[what])}"
        for what in ("added", "removed", "restarted")
        if changed.get(what)
    ]
    failed = changed.get("failed") or {}
    parts.extend(f"FAILED {name}: {reason}" for name, reason in failed.items())
    return f"the running bridge reloaded: {'; '.join(parts) or 'no route changed'}"
