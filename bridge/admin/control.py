"""Control a running bridge over its admin endpoint: `natsbridge reload`, `pause`, `resume`.

`reload_bridge()` (or `reload_running(config.bridge.admin)`) is the one call other tools
use (`natsbridge migrate advance` after it wrote a new phase): it POSTs /api/reload and
returns what changed, or raises ConfigError with the running bridge's positioned
problems, or AdminUnavailable when no bridge answers.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from natsbridge.bridge.config.model import Admin
from natsbridge.bridge.errors import BridgeError, ConfigError

DEFAULT_ADMIN = "http://127.0.0.1:7777"
RELOAD_TIMEOUT_S = 180.0  # a reload waits for the drains of the routes it restarts
UNPROCESSABLE = 422


class AdminUnavailable(BridgeError):
    """The admin endpoint could not be reached or refused the request."""


class AdminUnreachable(AdminUnavailable):
    """No bridge answers at the admin endpoint (it is stopped, or elsewhere)."""


def admin_request(
    admin_url: str, path: str, token: str | None, method: str = "GET", timeout: float = 5.0
) -> Any:
    """`method` `<admin_url><path>`: the JSON answer; AdminUnavailable on any refusal.

    A 422 (a reload's invalid config) raises ConfigError with the bridge's problems.
    """
    request = urllib.request.Request(f"{admin_url.rstrip('/')}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context() if admin_url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        answer = _json_or_empty(exc.read())
        if exc.code == UNPROCESSABLE and answer.get("problems"):
            raise ConfigError([str(problem) for problem in answer["problems"]]) from None
        hint = " (set --token or NATSBRIDGE_ADMIN_TOKEN)" if exc.code == 401 else ""
        why = answer.get("error") or exc.reason
        raise AdminUnavailable(f"{admin_url} answered {exc.code} {why}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminUnreachable(f"cannot reach the admin endpoint {admin_url}: {reason}") from None
    except ValueError as exc:  # a token http.client cannot send, an answer that is not JSON
        raise AdminUnavailable(f"{admin_url}: {exc}") from None


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def admin_url(settings: Admin) -> str:
    """The URL a local client reaches `settings.listen` at (a wildcard host is loopback)."""
    host, _, port = settings.listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if settings.tls else 'http'}://{host}:{port}"


def reload_bridge(
    admin: str, token: str | None, timeout: float = RELOAD_TIMEOUT_S
) -> dict[str, Any]:
    """Ask the bridge at `admin` to reload its config; what it did to each route.

    Returns `{"added", "removed", "restarted", "unchanged": [names], "failed": {name:
    reason}}`. Raises ConfigError (the new config is invalid; the bridge keeps running
    the old one) or AdminUnavailable.
    """
    answer: dict[str, Any] = admin_request(admin, "/api/reload", token, "POST", timeout)
    return answer


def reload_running(settings: Admin, timeout: float = RELOAD_TIMEOUT_S) -> dict[str, Any]:
    """`reload_bridge()` for the bridge a config describes: its admin endpoint and token."""
    admin, token = _endpoint_of(settings)
    return reload_bridge(admin, token, timeout)


def _endpoint_of(settings: Admin, config: str = "the config") -> tuple[str, str | None]:
    if not settings.enabled:
        raise AdminUnavailable(
            f"{config}: bridge.admin.enabled is false: no endpoint to ask "
            "(send SIGHUP to reload the bridge)"
        )
    return admin_url(settings), settings.token.get_secret_value() if settings.token else None


# ---------------------------------------------------------------- the CLI


def add_parsers(commands: Any) -> None:
    """Register `reload`, `pause` and `resume` with the `natsbridge` CLI."""
    reload = commands.add_parser(
        "reload", help="make a running bridge read its config again (like SIGHUP)"
    )
    add_target_options(reload)
    reload.add_argument(
        "--timeout",
        type=float,
        default=RELOAD_TIMEOUT_S,
        help="seconds to wait for the restarted routes' drains (default: %(default)s)",
    )
    reload.set_defaults(func=_reload)
    for verb, text in (
        ("pause", "stop reading a route's source (buffered messages still go out)"),
        ("resume", "read a paused route's source again"),
    ):
        command = commands.add_parser(verb, help=text)
        command.add_argument("route", help="route name")
        add_target_options(command)
        command.set_defaults(func=_route_action, verb=verb)


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """`-c FILE | --admin URL` and `--token T | --token-file F`: which bridge to ask."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-c", "--config", help="config file whose bridge.admin (listen, token, tls) to use"
    )
    where.add_argument(
        "--admin",
        type=parse_admin_url,
        help=f"admin endpoint, HOST:PORT or URL (default: {DEFAULT_ADMIN})",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token (default: $NATSBRIDGE_ADMIN_TOKEN)")
    token.add_argument("--token-file", help="file holding the bearer token")


def parse_admin_url(text: str) -> str:
    """An http(s) URL with a host; `host:port` alone means http:// (argparse type)."""
    bare = "://" not in text
    url = f"http://{text}" if bare else text
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        valid = valid and not (bare and parts.port is None)  # `foo` alone is no address
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT or http(s)://HOST:PORT, found {text!r}"
        )
    return url


def target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The admin URL and bearer token that `add_target_options`' arguments ask for.

    `-c` reads `bridge.admin` of the config and nothing else of it. The token comes from
    `--token`, `--token-file`, `$NATSBRIDGE_ADMIN_TOKEN` or the config, in that order.
    """
    from natsbridge.bridge.config.sections import read_admin

    url, token = args.admin or DEFAULT_ADMIN, None
    if args.config:
        url, token = _endpoint_of(read_admin(args.config), args.config)
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                return url, file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BridgeError(f"cannot read --token-file {args.token_file}: {exc}") from None
    return url, args.token or os.environ.get("NATSBRIDGE_ADMIN_TOKEN") or token


def _reload(args: argparse.Namespace) -> int:
    admin, token = target(args)
    outcome = reload_bridge(admin, token, args.timeout)
    for key in ("added", "removed", "restarted", "unchanged"):
        print(f"{key}: {', '.join(outcome.get(key, [])) or '-'}")
    for name, reason in outcome.get("failed", {}).items():
        print(f"failed: {name}: {reason}", file=sys.stderr)
    return 1 if outcome.get("failed") else 0


def _route_action(args: argparse.Namespace) -> int:
    admin, token = target(args)
    path = f"/api/routes/{urllib.parse.quote(args.route, safe='')}/{args.verb}"
    admin_request(admin, path, token, "POST")
    print(f"{args.route}: {'paused' if args.verb == 'pause' else 'reading again'}")
    return 0
