"""RabbitMQ's management API, to clean up after tests and benchmarks (best effort).

A test that leaves 100,000 persistent messages in a queue slows RabbitMQ down for every
test and benchmark after it: queues outlive the bridge that filled them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Callable

MANAGEMENT_URL = os.environ.get("NATSBRIDGE_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
_AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def delete_queues(matching: Callable[[str], bool]) -> int:
    """Delete the default vhost's queues whose name `matching` accepts; how many went."""
    deleted = 0
    with contextlib.suppress(OSError, ValueError):
        listing = urllib.request.Request(
            f"{MANAGEMENT_URL}/api/queues/%2F?columns=name", headers=_AUTH
        )
        with urllib.request.urlopen(listing, timeout=10) as response:
            names = [queue["name"] for queue in json.load(response)]
        for name in filter(matching, names):
            request = urllib.request.Request(
                f"{MANAGEMENT_URL}/api/queues/%2F/{urllib.parse.quote(name, safe='')}",
                method="DELETE",
                headers=_AUTH,
            )
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=10).close()
                deleted += 1
    return deleted
