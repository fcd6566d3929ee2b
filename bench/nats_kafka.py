"""nats-kafka (NATS's Go bridge) side by side with natsbridge: build it, run one leg.

Build once (Go toolchain, public source through the Go module proxy):

    python -m bench.nats_kafka build      # -> ~/.cache/natsbridge/nats-kafka/nats-kafka

``go mod download`` fetches the tagged module and its go.sum-pinned dependencies, ``go build``
compiles it (CGO off). ``go install MODULE@VERSION`` is not used: it asks the proxy for the
module's version list, which the proxy refuses for this module.

`bench/kafka.py` runs each direction through the binary on the same brokers, in the same
run, with the same messages as natsbridge. nats-kafka's own guarantees are weaker: its
producer is Sarama's SyncProducer with the default acks (the leader only, not all
replicas; with one broker the two are the same), one message at a time. Both bridges are timed
from the first message at the destination to the last (start-up and group joins are not
counted, as in the raw consume legs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import rate_from_first
from tests.e2e.bridge_process import _die_with_parent

MODULE = "github.com/nats-io/nats-kafka"
VERSION = os.environ.get("NATS_KAFKA_VERSION", "v1.4.2")
CACHE = Path(os.environ.get("NATSBRIDGE_CACHE_DIR", Path.home() / ".cache" / "natsbridge"))
BINARY = CACHE / "nats-kafka" / "nats-kafka"


def binary() -> Path | None:
    """The built nats-kafka, or None (its legs are then skipped with a message)."""
    return BINARY if os.access(BINARY, os.X_OK) else None


def build() -> Path:
    """`go build` nats-kafka VERSION into BINARY."""
    env = {
        **os.environ,
        "GOPATH": str(CACHE / "go"),
        "GOCACHE": str(CACHE / "go" / "build-cache"),
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    with tempfile.TemporaryDirectory() as tmp:
        info = subprocess.run(
            ["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
            cwd=tmp,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        source = Path(tmp) / "src"
        shutil.copytree(json.loads(info.stdout)["Dir"], source)
        for path in source.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
        BINARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-ldflags=-s -w", "-o", str(BINARY), "."],
            cwd=source,
            env=env,
            check=True,
        )
    return BINARY


def config(connector: dict[str, Any], nats_url: str) -> str:
    """A nats-kafka config file's text (its format accepts JSON) with one connector."""
    return json.dumps(
        {
            "reconnectinterval": 1000,
            "connecttimeout": 5000,
            "logging": {"time": True, "debug": False, "trace": False, "colors": False},
            "monitoring": {"httpport": -1},
            "nats": {"Servers": [nats_url], "ConnectTimeout": 5000, "MaxReconnects": 5},
            "jetstream": {"maxwait": 5000},
            "connect": [connector],
        },
        indent=1,
    )


def run(connector: dict[str, Any], nats_url: str, count: int, done: Callable[[], int]) -> float:
    """Messages/s of nats-kafka moving `count` with one connector; `done()` counts arrivals.

    Timed from the first message at the destination to the `count`-th, as natsbridge is.
    """
    path = binary()
    assert path is not None
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nats-kafka.conf"
        conf.write_text(config(connector, nats_url))
        with (Path(tmp) / "nats-kafka.log").open("wb") as log:
            process = subprocess.Popen(
                [str(path), "-c", str(conf)],
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
            try:
                return rate_from_first(count, done, lambda: process.poll() is None)
            except SystemExit as exc:
                tail = (Path(tmp) / "nats-kafka.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"nats-kafka: {exc}\n{tail}") from None
            finally:
                process.terminate()
                process.wait(timeout=30)


def main(argv: list[str]) -> int:
    """`build`: build the binary and print its path."""
    if argv != ["build"]:
        print("usage: python -m bench.nats_kafka build", file=sys.stderr)
        return 2
    print(build())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
