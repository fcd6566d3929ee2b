"""`natsbridge status`: the routes table, read from a running bridge's admin endpoint."""

from __future__ import annotations

from typing import Any

from natsbridge.bridge.admin.control import admin_request

COLUMNS = ("ROUTE", "STATE", "IN/s", "OUT/s", "DELIVERED", "BUFFER", "OLDEST", "DEAD", "LAST ERROR")


def fetch_routes(admin_url: str, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """GET `<admin_url>/api/routes` as JSON (AdminUnavailable when refused)."""
    result: dict[str, Any] = admin_request(admin_url, "/api/routes", token, timeout=timeout)
    return result


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
