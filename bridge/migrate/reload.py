"""Ask the bridge running a config to reload it, so that a phase change takes effect."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from natsbridge.bridge.config.loader import Config

RELOAD_TIMEOUT_S = 30.0


def admin_url(config: Config) -> str:
    """The admin endpoint of the bridge that runs `config` (a wildcard host: loopback)."""
    admin = config.bridge.admin
    host, _, port = admin.listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{'https' if admin.tls else 'http'}://{host}:{port}"


def reload_running_bridge(config: Config) -> str:
    """POST /api/reload to the config's admin endpoint; one line saying what happened."""
    later = "the new phase applies when the bridge starts (or on SIGHUP)"
    if not config.bridge.admin.enabled:
        return f"admin endpoint disabled: {later}"
    url = f"{admin_url(config)}/api/reload"
    request = urllib.request.Request(url, method="POST", data=b"")
    token = config.bridge.admin.token
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.get_secret_value()}")
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False  # the admin certificate names the host, not loopback
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=RELOAD_TIMEOUT_S, context=context):
            return f"the running bridge reloaded ({url})"
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        return f"the running bridge refused the reload ({exc.code} {detail}): {later}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no bridge answered at {url} ({reason}): {later}"
