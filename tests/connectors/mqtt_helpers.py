"""The MQTT broker of the tests (NATSBRIDGE_MQTT_URL, from services.sh) and a raw paho client."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import HINT, in_ci


def mqtt_url() -> str:
    """mqtt://host:port of the test broker: skip without one, fail under CI."""
    url = os.environ.get("NATSBRIDGE_MQTT_URL", "").strip()
    if url:
        return url
    message = f"NATSBRIDGE_MQTT_URL is not set, so there is no MQTT broker to test against: {HINT}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def _required(var: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        message = f"{var} is not set: {HINT}"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return value


def mqtt_auth() -> tuple[str, str, str]:
    """(url, username, password) of a listener that needs them: skip without one, fail under CI."""
    return (
        _required("NATSBRIDGE_MQTT_AUTH_URL"),
        os.environ.get("NATSBRIDGE_MQTT_USER", "natsbridge"),
        os.environ.get("NATSBRIDGE_MQTT_PASSWORD", "natsbridge-secret"),
    )


def mqtt_tls() -> tuple[str, str]:
    """(mqtts:// url, CA file) of a TLS listener: skip without one, fail under CI."""
    return _required("NATSBRIDGE_MQTT_TLS_URL"), _required("NATSBRIDGE_MQTT_TLS_CA_FILE")


def host_port(url: str) -> tuple[str, int]:
    """Host and port of an mqtt:// URL."""
    host, _, port = url.removeprefix("mqtt://").partition(":")
    return host, int(port or 1883)


@contextmanager
def raw_client(url: str, client_id: str = "", protocol: str = "5") -> Iterator[object]:
    """A connected paho client (clean session) with its network thread, for test traffic."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    connected = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
    )
    client.on_connect = lambda *args: connected.set()
    client.connect(*host_port(url))
    client.loop_start()
    assert connected.wait(10), "raw MQTT client did not connect"
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()
