"""The one TLS client context builder of every connector, from a connection's `tls` section."""

from __future__ import annotations

import os
import ssl

from natsbridge.bridge.config.model import Tls
from natsbridge.bridge.errors import PermanentError


def tls_context(tls: Tls | None, kind: str, key: str = "tls") -> ssl.SSLContext:
    """A client SSLContext: system CAs or `ca_file`, optional client cert/key, verify on/off.

    With `verify` (the default) the server's certificate must chain to a trusted CA and
    name the host connected to; `verify: false` checks neither. A file that is missing,
    unreadable or not what it should be is a PermanentError naming `kind`, the config
    key (`key`.ca_file, ...) and the path.
    """
    tls = tls or Tls()
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not os.path.isfile(path):
            raise PermanentError(f"{kind}: {key}.{name} {path!r} does not exist or is not a file")

    def encrypted() -> str:
        raise ValueError("the key is encrypted; natsbridge needs an unencrypted PEM key")

    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentError(
            f"{kind}: {key}.ca_file {tls.ca_file!r} holds no usable PEM CA certificate: {exc}"
        ) from None
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=encrypted)
        except (OSError, ssl.SSLError, ValueError) as exc:
            files = f"{key}.cert_file {tls.cert_file!r}"
            if tls.key_file:
                files += f" and {key}.key_file {tls.key_file!r}"
            raise PermanentError(
                f"{kind}: {files}: not a PEM certificate with its private key: {exc}"
            ) from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
