"""Secret values and their redaction from every text natsbridge prints.

A value is secret when it came from `${env:...}` or `${file:...}`, when it sits in a
password-like field, or when it is the password in a URL's userinfo. Secret values are
registered here once, at config load, and `redact()` replaces each of them with `***`
in any text: error messages, log lines, CLI output and admin API answers.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()


def register(value: str) -> None:
    """Remember `value` as secret so that `redact()` hides it from now on."""
    global _ordered
    if not value:
        return
    with _lock:
        if value not in _secrets:
            _secrets.add(value)
            # Longest first, so a secret that contains another is hidden whole.
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def url_password(url: str) -> str | None:
    """The password in a URL's userinfo, or None."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """`url` with the password in its userinfo replaced by `***` (the user name is kept)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.password is None:
        return redact(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:{MASK}@{host}"
    return redact(urlunsplit(parts._replace(netloc=netloc)))
