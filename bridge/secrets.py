"""Secret values: masked by structure where natsbridge prints them, searched for in log text.

A value is secret when it sits in a secret field (`password`, `passcode`, `token`,
`sasl_password`) or is the password in a URL's userinfo; the loader registers each once.
Whatever natsbridge prints from its own structures masks those fields and URL passwords
(`redact_url`); message data, subjects and `natsbridge map` results are never altered.
`redact()` is only for free text natsbridge did not compose, such as log records of
the client libraries and the text of their exceptions: it hides each registered secret
in its raw form and in the escaped forms libraries print (repr, JSON, URL and STOMP
escaping, and one escape of another). A secret shorter than MIN_SEARCHED characters is
not searched for: it would mask pieces of every line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "***"
MIN_SEARCHED = 4
"""Secrets shorter than this are masked in fields and URLs, but not searched for in text."""

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()  # every searched form of every secret, longest first


def _py_repr(text: str) -> str:
    # The quotes added force the single-quoted style that escapes `'`.
    return repr(text + "'\"")[1:-4]


def _bytes_repr(text: str) -> str:
    return repr(text.encode() + b"'\"")[2:-4]


def _stomp(text: str) -> str:
    # STOMP 1.2 header escaping (stomp.py logs frames as sent).
    table = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"}
    return "".join(table.get(char, char) for char in text)


_ESCAPES: tuple[Callable[[str], str], ...] = (
    _py_repr,
    lambda text: _py_repr(text).replace("\\'", "'"),  # repr in double quotes
    _bytes_repr,
    lambda text: _bytes_repr(text).replace("\\'", "'"),
    lambda text: json.dumps(text)[1:-1],
    lambda text: json.dumps(text, ensure_ascii=False)[1:-1],
    lambda text: quote(text, safe=""),
    lambda text: quote_plus(text, safe=""),
    _stomp,
)


def escaped_forms(value: str) -> set[str]:
    """`value` and the forms it takes under one or two of the escapes libraries apply."""
    once = {escape(value) for escape in _ESCAPES}
    return {value} | once | {escape(form) for form in once for escape in _ESCAPES}


def register(value: str) -> None:
    """Remember `value` as secret so that `redact()` hides it from now on."""
    global _ordered
    if not value:
        return
    with _lock:
        if value not in _secrets:
            _secrets.add(value)
            forms = {
                form
                for secret in _secrets
                if len(secret) >= MIN_SEARCHED
                for form in escaped_forms(secret)
            }
            # Longest first, so a secret that contains another is hidden whole.
            _ordered = tuple(sorted(forms, key=len, reverse=True))


def redact(text: str) -> str:
    """Free `text` (a log record, a library's error) with every secret form replaced by `***`.

    Never use it on message data or addresses: a secret may be a substring of them.
    """
    for form in _ordered:
        if form in text:
            text = text.replace(form, MASK)
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
        if parts.password is None:
            return url
        port = parts.port
    except ValueError:  # not a URL urllib can take apart: mask everything before the host
        user, at, host = url.rpartition("@")
        return f"{user.partition('://')[0]}://{MASK}@{host}" if at else url
    host = parts.hostname or ""
    if port is not None:
        host = f"{host}:{port}"
    netloc = f"{parts.username or ''}:{MASK}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
