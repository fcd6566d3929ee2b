"""`natsbridge status`: the routes table, read from a running bridge's admin endpoint."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from natsbridge.bridge.errors import BridgeError

COLUMNS = ("ROUTE", "STATE", "IN/s", "OUT/s", "DELIVERED", "BUFFER", "OLDEST", "DEAD", "LAST ERROR")


class AdminUnavailable(BridgeError):
    """The admin endpoint could not be reached or refused the request."""


def fetch_routes(admin_url: str, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """GET `<admin_url>/api/routes` as JSON."""
    request = urllib.request.Request(f"{admin_url.rstrip('/')}/api/routes")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context() if admin_url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            result: dict[str, Any] = json.load(response)
            return result
    except urllib.error.HTTPError as exc:
        hint = " (set --token or NATSBRIDGE_ADMIN_TOKEN)" if exc.code == 401 else ""
        raise AdminUnavailable(f"{admin_url} answered {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminUnavailable(f"cannot reach the admin endpoint {admin_url}: {reason}") from None


def render_table(routes: list[dict[str, Any]]) -> str:
    """A plain-text table, one row per route."""
    rows = [COLUMNS]
    for route in routes:
        error = route["last_error"]["message"] if route.get("last_error") else ""
        age = route["buffer"]["oldest_age_s"]
        rows.append(
            (
                route["name"],
                route["state"] + ("" if route["ready"] else " !"),
                f"{route['rates']['in_per_s']:.0f}",
                f"{route['rates']['out_per_s']:.0f}",
                str(route["counters"]["delivered"]),
                str(route["buffer"]["depth"]),
                f"{age:.1f}s" if age is not None else "-",
                str(sum(route["counters"]["dead_lettered"].values())),
                error[:60],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
