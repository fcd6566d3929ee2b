"""mappings/ is pure: importing every module loads no broker client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(f"mappings.{p.stem}" for p in (ROOT / "mappings").glob("*.py"))


def test_no_broker_client_is_imported() -> None:
    code = (
        "import sys\n"
        f"for m in {MODULES!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pika', 'kafka', 'stomp', 'nats', 'asyncio', 'socket', 'sqlite3'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert len(MODULES) >= 10
    assert out.stdout.strip() == ""
