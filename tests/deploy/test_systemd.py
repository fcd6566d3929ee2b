"""deploy/systemd/natsbridge.service: its command, data dir, stop and hardening settings;
`systemd-analyze verify` and `systemd-analyze security --offline` on it; and the bridge
under the kernel's own W^X policy, which is what MemoryDenyWriteExecute= enforces.

Nothing here starts the unit: systemd is not PID 1 on this machine.
"""

from __future__ import annotations

import ctypes
import shutil
import sys
from pathlib import Path

import pytest

from natsbridge.bridge.config.units import parse_duration
from tests.conftest import REPO_ROOT
from tests.deploy.tools import find_tool, missing, natsbridge_validate, parse_cli, run

UNIT = REPO_ROOT / "deploy/systemd/natsbridge.service"
DRAIN_DEFAULT = 30.0  # bridge.drain_timeout's default

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value assigned to it, in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside any section: {line}"
        assert not line.endswith("\\"), "no continuation lines in this unit"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def last(section: dict[str, list[str]], key: str) -> str:
    assert key in section, f"{key}= is not set"
    return section[key][-1]


def test_sections_and_install(unit: dict[str, dict[str, list[str]]]) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert last(unit["Unit"], "After") == "network-online.target"
    assert last(unit["Install"], "WantedBy") == "multi-user.target"


def test_runs_the_venv_command_as_its_own_user(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert last(service, "Type") == "simple"
    assert last(service, "User") == "natsbridge"
    exec_start = last(service, "ExecStart")
    assert exec_start == "/opt/natsbridge/bin/natsbridge run -c /etc/natsbridge/bridge.yaml"
    binary, *argv = exec_start.split()
    args = parse_cli(argv)
    assert args.command == "run" and args.config == "/etc/natsbridge/bridge.yaml"
    pre_binary, *pre_argv = last(service, "ExecStartPre").split()
    assert pre_binary == binary
    assert parse_cli(pre_argv).command == "validate"
    assert last(service, "EnvironmentFile") == "-/etc/natsbridge/env"  # optional ("-")


def test_data_dir_is_the_state_directory(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert last(service, "StateDirectory") == "natsbridge"
    environment = dict(item.split("=", 1) for item in service["Environment"])
    assert environment["NATSBRIDGE_DATA_DIR"] == "/var/lib/natsbridge"
    assert last(service, "WorkingDirectory") == "/var/lib/natsbridge"


def test_stops_by_draining(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert last(service, "KillSignal") == "SIGTERM"
    assert last(service, "KillMode") == "mixed"  # SIGTERM to the bridge only, then the group
    assert parse_duration(last(service, "TimeoutStopSec")) > DRAIN_DEFAULT
    assert last(service, "Restart") == "on-failure"


def test_reload_is_sighup(unit: dict[str, dict[str, list[str]]]) -> None:
    assert last(unit["Service"], "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_hardening(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    for key, value in HARDENING.items():
        assert last(service, key) == value, key
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), "later filters only deny"


def fake_root(tmp_path: Path) -> Path:
    """A root with systemd's own units, the unit under test and an executable at
    /opt/natsbridge/bin/natsbridge, so `verify` checks the unit exactly as shipped."""
    root = tmp_path / "root"
    units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if units is None:
        missing("systemd's unit directory", "apt-get install systemd")
        raise AssertionError("unreachable")
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/natsbridge.service")
    for name in ("opt/natsbridge/bin/natsbridge", "bin/kill"):  # ExecStart, ExecReload
        binary = root / name
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return root


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = find_tool("systemd-analyze")
    root = fake_root(tmp_path)
    result = run([analyze, "verify", f"--root={root}", "natsbridge.service"], check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # The check is real: without the binary the same command fails.
    (root / "opt/natsbridge/bin/natsbridge").unlink()
    result = run([analyze, "verify", f"--root={root}", "natsbridge.service"], check=False)
    assert result.returncode != 0 and "natsbridge" in result.stderr


def test_systemd_analyze_security_exposure_is_low() -> None:
    analyze = find_tool("systemd-analyze")
    # Exposure is 0.0 (locked down) to 10.0 (unprotected); the threshold is in tenths.
    result = run(
        [analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(UNIT)],
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level for natsbridge.service" in result.stdout


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

# Run a command with the kernel's memory-deny-write-execute policy (inherited across exec).
MDWE_EXEC = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed: errno {{ctypes.get_errno()}}")
os.execv(sys.argv[1], sys.argv[1:])
"""

EXERCISE = """
import asyncio, os, sqlite3, ssl, sys, tempfile
import natsbridge.bridge.cli, natsbridge.bridge.runtime.bridge, natsbridge.bridge.admin.server
import natsbridge.connectors.amqp, natsbridge.connectors.kafka
import natsbridge.connectors.stomp, natsbridge.connectors.nats
import pika, kafka, stomp, nats, pydantic_core, prometheus_client, yaml
ssl.create_default_context()
with tempfile.TemporaryDirectory() as d:
    db = sqlite3.connect(os.path.join(d, "buffer.db"))
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=full")
    db.execute("create table t (payload blob)")
    db.executemany("insert into t values (?)", [(os.urandom(1024),)] * 500)
    db.commit()
asyncio.run(asyncio.sleep(0))
print("ok")
"""


def mdwe_supported() -> bool:
    """Whether this kernel has PR_SET_MDWE (Linux 6.3+), tried in a throwaway process."""
    probe = f"import ctypes; raise SystemExit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, 1, 0, 0, 0))"
    return run([sys.executable, "-c", probe], check=False).returncode == 0


def test_python_and_the_bridge_run_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes refuses writable+executable mappings (systemd 253+ uses
    the kernel's PR_SET_MDWE for it). CPython has no JIT, so the bridge must not care: its
    imports, SQLite buffer, TLS and event loop run under that policy; W+X memory does not."""
    assert ctypes.sizeof(ctypes.c_void_p) == 8
    if not mdwe_supported():
        missing("PR_SET_MDWE (Linux 6.3+)", "run on a newer kernel")
    python = sys.executable

    def under_mdwe(*argv: str) -> int:
        return run([python, "-c", MDWE_EXEC, *argv], check=False).returncode

    wx = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    assert under_mdwe(python, "-c", wx) != 0, "the policy is not in force"
    result = run([python, "-c", MDWE_EXEC, python, "-c", EXERCISE])
    assert result.stdout.strip() == "ok"
    natsbridge = Path(python).parent / "natsbridge"
    for example in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        natsbridge_validate(example)  # without the policy, for comparison
        assert under_mdwe(str(natsbridge), "validate", "-c", str(example)) == 0, example
