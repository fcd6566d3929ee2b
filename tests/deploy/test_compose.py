"""deploy/compose.yaml, as Docker Compose itself renders it (`docker compose config`, which
needs no engine): every service, image, port and healthcheck; the bridges' configs exist,
validate, and reach brokers that this file runs, on the ports the dev harness uses; two
replicas of one bridge share a config on a 3-node JetStream cluster.

No Docker engine runs here: the containers are never started by this suite.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.units import parse_duration
from tests.conftest import REPO_ROOT
from tests.deploy.tools import (
    clean_env,
    compose_command,
    harness_ports,
    natsbridge_validate,
    parse_cli,
    run,
)

COMPOSE_FILE = REPO_ROOT / "deploy/compose.yaml"
BRIDGES = {  # service -> the example it runs, and its admin port on the host
    "natsbridge": ("examples/rabbitmq-nats.yaml", 7777),
    "natsbridge-kafka": ("examples/kafka-nats.yaml", 7778),
    "natsbridge-stomp": ("examples/stomp-nats.yaml", 7779),
}
REPLICAS = {  # service -> its admin port on the host; all run REPLICA_CONFIG
    "natsbridge-replica-1": 7780,
    "natsbridge-replica-2": 7781,
}
REPLICA_CONFIG = REPO_ROOT / "deploy/compose/replicas.yaml"
CLUSTER = ("nats-1", "nats-2", "nats-3")  # the harness's names for its cluster's nodes
BROKERS = {"nats", "rabbitmq", "activemq", "kafka", *CLUSTER}
DATA_DIR = "/var/lib/natsbridge"
CONFIG_PATH = "/etc/natsbridge/bridge.yaml"
# What each broker listens on inside the compose network (container ports), by protocol.
CONTAINER_PORTS = {
    ("nats", "nats"): 4222,
    ("rabbitmq", "amqp"): 5672,
    ("rabbitmq", "stomp"): 61613,
    ("activemq", "stomp"): 61613,
    ("kafka", "kafka"): 9092,
    **{(node, "nats"): 4222 for node in CLUSTER},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """`docker compose config` of the file, interpolated without any variable set."""
    env = clean_env()
    for name in ("ACTIVEMQ_USER", "ACTIVEMQ_PASSWORD"):
        env.pop(name, None)
    command = [*compose_command(), "-f", str(COMPOSE_FILE), "config", "--format", "json"]
    rendered: dict[str, Any] = json.loads(run(command, env=env).stdout)
    return rendered


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of a service's published ports."""
    return {
        int(p["target"]): (p.get("host_ip", ""), int(p["published"]))
        for p in service.get("ports", [])
    }


def test_compose_validates_and_names_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(BRIDGES) | set(REPLICAS) | BROKERS
    # The raw file loads with a YAML safe loader too (anchors and merge keys included).
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert raw["services"]["natsbridge-kafka"]["command"] == raw["x-natsbridge"]["command"]


def test_broker_images_are_the_official_ones(compose: dict[str, Any]) -> None:
    images = {name: compose["services"][name]["image"] for name in BROKERS}
    assert images["rabbitmq"] == "rabbitmq:3-management"
    assert re.fullmatch(r"apache/activemq-classic:6\.[\d.]+", images["activemq"])
    kafka = re.fullmatch(r"apache/kafka:(\d+)\.(\d+)\.\d+", images["kafka"])
    assert kafka and int(kafka.group(1)) >= 4, images["kafka"]  # 4.x: KRaft only
    nats = re.fullmatch(r"nats:(\d+)\.(\d+)(\.\d+)?-alpine", images["nats"])
    assert nats and (int(nats.group(1)), int(nats.group(2))) >= (2, 12), images["nats"]
    assert {images[node] for node in CLUSTER} == {images["nats"]}


def test_brokers_publish_the_harness_ports_on_loopback(compose: dict[str, Any]) -> None:
    harness = harness_ports()
    services = compose["services"]
    expected = {
        "nats": {4222: harness["NATS_PORT"]},
        "rabbitmq": {5672: harness["AMQP_PORT"], 61613: harness["RABBIT_STOMP_PORT"]},
        "activemq": {61613: harness["ACTIVEMQ_STOMP_PORT"]},
        "kafka": {29092: harness["KAFKA_PORT"]},  # the HOST listener, advertised as below
    }
    for n, node in enumerate(CLUSTER, start=1):
        expected[node] = {
            4222: harness["NATS_CLUSTER_CLIENT_BASE"] + n,
            8222: harness["NATS_CLUSTER_MONITOR_BASE"] + n,
        }
    assert harness["ACTIVEMQ_STOMP_PORT"] == 61614
    for name, ports in expected.items():
        got = published(services[name])
        for target, host_port in ports.items():
            assert got.get(target) == ("127.0.0.1", host_port), f"{name}: {got}"
    every = [addr for s in services.values() for addr in published(s).values()]
    assert every and {host for host, _ in every} == {"127.0.0.1"}, "published beyond loopback"
    assert len(set(every)) == len(every), f"two services publish the same host port: {every}"
    kafka_env = services["kafka"]["environment"]
    advertised = dict(
        item.split("://", 1) for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert advertised["HOST"] == f"127.0.0.1:{harness['KAFKA_PORT']}"
    assert advertised["PLAINTEXT"] == "kafka:9092"


def test_every_broker_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in BROKERS:
        check = services[name].get("healthcheck")
        assert check and check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert not check.get("disable"), name
    assert "check_port_connectivity" in services["rabbitmq"]["healthcheck"]["test"]
    assert any("/healthz" in part for part in services["nats"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    stomp_check = " ".join(services["activemq"]["healthcheck"]["test"])
    assert "CONNECT" in stomp_check and "CONNECTED" in stomp_check


def test_brokers_run_the_modes_the_bridge_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("nats", *CLUSTER):
        assert "--jetstream" in services[name]["command"], name
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not any("ZOOKEEPER" in key for key in kafka)
    plugins_mount = next(
        v for v in services["rabbitmq"]["volumes"] if v["target"] == "/etc/rabbitmq/enabled_plugins"
    )
    plugins = Path(plugins_mount["source"]).read_text()
    assert re.fullmatch(r"\[[a-z_,]+\]\.\n", plugins), plugins
    assert "rabbitmq_stomp" in plugins.strip("[].\n").split(",")


@pytest.mark.parametrize("name", sorted(BRIDGES))
def test_bridge_service(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    example, admin_port = BRIDGES[name]
    assert service["build"] == {"context": str(REPO_ROOT), "dockerfile": "deploy/docker/Dockerfile"}
    assert (REPO_ROOT / service["build"]["dockerfile"]).is_file()
    args = parse_cli(service["command"])
    assert args.config == CONFIG_PATH
    assert args.admin_listen == "0.0.0.0:7777"
    assert published(service) == {7777: ("127.0.0.1", admin_port)}
    mounts = {m["target"]: m for m in service["volumes"]}
    config_mount = mounts[CONFIG_PATH]
    assert config_mount["type"] == "bind" and config_mount["read_only"]
    assert Path(config_mount["source"]) == REPO_ROOT / example
    data_mount = mounts[DATA_DIR]
    assert data_mount["type"] == "volume" and data_mount["source"] in compose["volumes"]
    assert service["environment"]["NATSBRIDGE_DATA_DIR"] == DATA_DIR
    assert service["read_only"] and "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert service["stop_signal"] == "SIGTERM"


@pytest.mark.parametrize("name", sorted(BRIDGES))
def test_bridge_config_validates_and_reaches_healthy_brokers_here(
    compose: dict[str, Any], name: str
) -> None:
    """The mounted example, read with the service's environment: valid, its data dir on the
    volume, every connection a broker of this file (by service name and container port) that
    the bridge waits for until healthy, and a stop grace period above its drain timeout."""
    config = service_config(compose, name)
    assert config.bridge.data_dir == DATA_DIR


def service_config(compose: dict[str, Any], name: str) -> Any:
    """A bridge service's mounted config, validated by the CLI with the service's environment
    and loaded; every connection reaches a broker of this file that the service waits for
    until healthy, and its stop grace period is above the drain timeout."""
    service = compose["services"][name]
    source = Path(next(m["source"] for m in service["volumes"] if m["target"] == CONFIG_PATH))
    assert source.is_file()
    env = {k: str(v) for k, v in service["environment"].items()}
    natsbridge_validate(source, env)
    config = load_config(source, clean_env(env))
    depends = service["depends_on"]
    for connection_name, connection in config.connections.items():
        for host, port in endpoints(connection):
            assert host in BROKERS, f"{connection_name}: {host} is no service of compose.yaml"
            assert CONTAINER_PORTS[(host, protocol_of(connection))] == port, connection_name
            assert depends.get(host, {}).get("condition") == "service_healthy", (name, host)
    grace = parse_duration(service["stop_grace_period"])
    assert grace > config.bridge.drain_timeout
    return config


def test_replicas_run_one_config_as_distinct_replicas(compose: dict[str, Any]) -> None:
    """Two services, one config file as written: the same bridge id, each its own replica
    name, every route buffered in the cluster's JetStream (no volume of their own)."""
    services = compose["services"]
    bridge = services["natsbridge"]
    configs = {}
    for name, admin_port in REPLICAS.items():
        service = services[name]
        for key in ("build", "command", "read_only", "tmpfs", "cap_drop", "stop_signal"):
            assert service[key] == bridge[key], (name, key)
        assert published(service) == {7777: ("127.0.0.1", admin_port)}
        mounts = {m["target"]: m for m in service["volumes"]}
        assert set(mounts) == {CONFIG_PATH}, f"{name}: a replica needs no volume: {mounts}"
        assert mounts[CONFIG_PATH]["type"] == "bind" and mounts[CONFIG_PATH]["read_only"]
        assert Path(mounts[CONFIG_PATH]["source"]) == REPLICA_CONFIG
        configs[name] = service_config(compose, name)
    ids = {config.bridge.id for config in configs.values()}
    replicas = {config.bridge.replica for config in configs.values()}
    assert len(ids) == 1 and len(replicas) == len(REPLICAS) and None not in replicas, replicas
    for name, config in configs.items():
        assert config.bridge.replica == services[name]["environment"]["NATSBRIDGE_REPLICA"]
        assert config.routes, name
        for route in config.routes:
            assert route.buffer.mode == "jetstream", (name, route.name)
            cluster = config.connections[route.buffer.connection]
            assert sorted(host for host, _ in endpoints(cluster)) == list(CLUSTER), route.name
            assert route.buffer.replicas == len(CLUSTER), route.name


def test_replica_config_refuses_to_run_without_a_replica_name() -> None:
    """Two replicas left to a default would share one name (README: Workers and replicas)."""
    result = run(
        [sys.executable, "-m", "natsbridge", "validate", "-c", str(REPLICA_CONFIG)],
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bridge.replica: environment variable NATSBRIDGE_REPLICA is not set" in result.stderr


def test_cluster_nodes_route_to_each_other_with_their_own_store(compose: dict[str, Any]) -> None:
    services = compose["services"]
    routes = {f"nats://{node}:6222" for node in CLUSTER}
    names, stores = set(), set()
    for node in CLUSTER:
        flags = nats_flags(services[node]["command"])
        assert "--jetstream" in flags and flags["--store_dir"] == "/data", node
        assert flags["--http_port"] == "8222", node  # what the healthcheck reads
        assert flags["--cluster"] == "nats://0.0.0.0:6222", node
        assert set(flags["--routes"].split(",")) == routes, node
        assert flags["--cluster_name"] == "natsbridge", node
        assert "--no_advertise" in flags, node  # clients outside get no container addresses
        names.add(flags["--server_name"])
        (store,) = [v for v in services[node]["volumes"] if v["target"] == "/data"]
        assert store["type"] == "volume" and store["source"] in compose["volumes"], node
        stores.add(store["source"])
    assert names == set(CLUSTER)
    assert len(stores) == len(CLUSTER), "two nodes share a store"
    (single,) = [v["source"] for v in services["nats"]["volumes"] if v["target"] == "/data"]
    assert single not in stores


def nats_flags(command: list[str]) -> dict[str, str | None]:
    """nats-server's flags: `--name=value`, `--name value`, or `--name` alone (None)."""
    flags: dict[str, str | None] = {}
    rest = list(command)
    while rest:
        name, equals, value = rest.pop(0).partition("=")
        assert name.startswith("--"), f"{name!r} is not a flag: {command}"
        if equals:
            flags[name] = value
        elif rest and not rest[0].startswith("-"):
            flags[name] = rest.pop(0)
        else:
            flags[name] = None
    return flags


def protocol_of(connection: Any) -> str:
    return {"amqp": "amqp", "stomp": "stomp", "nats": "nats", "kafka": "kafka"}[connection.kind]


def endpoints(connection: Any) -> list[tuple[str, int]]:
    """(host, port) pairs a connection dials."""
    if connection.kind == "kafka":
        pairs = [server.rsplit(":", 1) for server in connection.bootstrap_servers]
        return [(host, int(port)) for host, port in pairs]
    urls = connection.servers if connection.kind == "nats" else [connection.url]
    result = []
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname and parts.port, url
        result.append((parts.hostname, parts.port))
    return result
