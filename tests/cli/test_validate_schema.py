"""`natsbridge validate`, `schema` and `--version` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from natsbridge import __version__

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def natsbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", ["rabbitmq-nats", "kafka-nats", "stomp-nats"])
def test_validate_examples(name: str) -> None:
    result = natsbridge("validate", "-c", str(EXAMPLES / f"{name}.yaml"))
    assert result.returncode == 0, result.stderr
    routes = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["routes"]
    lines = result.stdout.splitlines()
    assert f"{len(routes)} routes" in lines[0]
    for route, line in zip(routes, lines[1:], strict=True):
        assert line.strip().startswith(f"{route['name']}: ")
        assert route["delivery"] in line


def test_validate_failure_exits_1_with_count(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text((EXAMPLES / "kafka-nats.yaml").read_text().replace("topics:", "topicz:"))
    result = natsbridge("validate", "-c", str(config))
    assert result.returncode == 1
    assert "routes[0].from.topicz: unknown key 'topicz' — did you mean 'topics'?" in result.stderr
    assert result.stderr.strip().endswith("1 problem found")


def test_usage_error_exits_2() -> None:
    assert natsbridge("validate").returncode == 2
    assert natsbridge("no-such-command").returncode == 2


def test_missing_file_exits_1() -> None:
    result = natsbridge("validate", "-c", "/nonexistent/bridge.yaml")
    assert result.returncode == 1 and "cannot read config" in result.stderr


def test_version() -> None:
    result = natsbridge("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"natsbridge {__version__}"


def test_schema_validates_the_examples_and_rejects_typos() -> None:
    result = natsbridge("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in EXAMPLES.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = yaml.safe_load((EXAMPLES / "kafka-nats.yaml").read_text())
    bad["routes"][0]["from"]["topicz"] = ["x"]
    del bad["routes"][0]["from"]["topics"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = yaml.safe_load((EXAMPLES / "kafka-nats.yaml").read_text())
    bad["routes"][1]["delivery"] = "sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = yaml.safe_load((EXAMPLES / "kafka-nats.yaml").read_text())
    connection = next(iter(bad["connections"].values()))
    connection["bootstrap_serverz"] = connection.pop("bootstrap_servers")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_importing_bridge_imports_no_broker_client() -> None:
    code = (
        "import sys, bridge, bridge.config, bridge.cli, bridge.envelope;"
        "bad = {'pika', 'kafka', 'stomp', 'nats'} & set(sys.modules);"
        "print(sorted(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_lists_at_most_100_problems(tmp_path: Path) -> None:
    config = tmp_path / "garbage.yaml"
    config.write_text("version: 1\n" + "".join(f"k{i}: 1\n" for i in range(150)))
    result = natsbridge("validate", "-c", str(config))
    assert result.returncode == 1
    *problems, more, summary = result.stderr.splitlines()
    count = int(summary.split()[0])
    assert len(problems) == 100 and count > 150
    assert more == f"… and {count - 100} more"
