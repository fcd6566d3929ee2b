"""bridge.tls: the one TLS context builder of every connector (no broker needed)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from natsbridge.bridge.config.model import Tls
from natsbridge.bridge.errors import PermanentError
from natsbridge.bridge.tls import tls_context


def test_defaults_verify_the_certificate_and_the_host_name() -> None:
    context = tls_context(None, "amqp")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_verify_false_checks_neither() -> None:
    context = tls_context(Tls(verify=False), "nats")
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


@pytest.mark.parametrize("key", ["ca_file", "cert_file"])
def test_a_missing_file_names_the_kind_the_key_and_the_path(key: str, tmp_path: Path) -> None:
    path = str(tmp_path / "nope.pem")
    with pytest.raises(PermanentError) as raised:
        tls_context(Tls(**{key: path}), "stomp")
    assert str(raised.value) == f"stomp: tls.{key} {path!r} does not exist or is not a file"


def test_files_that_are_not_pem_say_which_they_are(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(PermanentError, match=r"^kafka: tls.ca_file .*junk.pem' holds no usable"):
        tls_context(Tls(ca_file=str(junk)), "kafka")
    with pytest.raises(PermanentError, match=r"^amqp: tls.cert_file .* and tls.key_file .*: not"):
        tls_context(Tls(cert_file=str(junk), key_file=str(junk)), "amqp")
