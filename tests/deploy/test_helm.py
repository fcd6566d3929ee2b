"""deploy/helm/natsbridge rendered by the real `helm template` (and `helm lint`), with the
default values and with non-default ones; the objects are checked, the ConfigMap's config
is validated by `natsbridge validate`, and the probes' commands are run against the real
admin server. `bash deploy/helm/install-helm.sh` installs helm (Go module proxy, cached).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.units import parse_duration
from tests.conftest import REPO_ROOT
from tests.deploy.test_dockerfile import DATA_DIR, VENV
from tests.deploy.tools import clean_env, find_tool, natsbridge_validate, parse_cli, run

CHART = REPO_ROOT / "deploy/helm/natsbridge"
RELEASE = "edge"
NAMESPACE = "bridges"
KUBE_VERSION = "1.30.0"

NON_DEFAULT: dict[str, Any] = {
    "image": {"repository": "registry.example/natsbridge", "tag": "9.9.9"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "admin": {"tokenSecret": {"name": "natsbridge-admin", "key": "token"}},
    "secretEnv": [
        {"name": "NATSBRIDGE_AMQP_URL", "secretName": "rabbitmq-natsbridge", "key": "url"},
        {"name": "KAFKA_PASSWORD", "secretName": "kafka-natsbridge", "key": "password"},
    ],
    "secretFiles": [{"secretName": "nats-natsbridge"}],
    "env": [{"name": "NATSBRIDGE_NATS_URL", "value": "nats://nats.messaging:4222"}],
    "terminationGracePeriodSeconds": 100,
    "persistence": {"size": "20Gi", "storageClassName": "fast-ssd"},
    "config": {
        "version": 1,
        "bridge": {"id": "dc1-edge", "drain_timeout": "90s", "data_dir": "/somewhere/else"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": "${env:NATSBRIDGE_AMQP_URL}"},
            "kafka": {
                "kind": "kafka",
                "bootstrap_servers": ["kafka.messaging:9092"],
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "natsbridge",
                "sasl_password": "${env:KAFKA_PASSWORD}",
            },
            "nats": {
                "kind": "nats",
                "servers": ["${env:NATSBRIDGE_NATS_URL}"],
                "token": "${file:/run/secrets/nats-natsbridge/token}",
            },
        },
        "routes": [
            {
                "name": "orders-to-nats",
                "from": {"connection": "rabbit", "exchange": "orders"},
                "to": {
                    "connection": "nats",
                    "subject": "legacy.orders.{{routing_key}}",
                    "jetstream": {"stream": "ORDERS"},
                },
            },
            {
                "name": "clicks-to-nats",
                "from": {"connection": "kafka", "topics": ["clicks"]},
                "to": {"connection": "nats", "subject": "kafka.{{topic}}.{{partition}}"},
            },
        ],
    },
}
# What the Secrets hold, for validating the rendered config as the pod would read it.
SECRET_ENV = {
    "NATSBRIDGE_AMQP_URL": "amqp://natsbridge:pw@rabbitmq.messaging:5672/%2F",
    "KAFKA_PASSWORD": "kafka-pw",
    "NATSBRIDGE_NATS_URL": "nats://nats.messaging:4222",
}
# What the mounted Secrets hold, by mount path.
SECRET_FILES = {
    "/run/secrets/nats-natsbridge/token": "nats-token",
    "/run/natsbridge/admin/token": "admin-token",
}


def helm_path() -> str:
    """The real helm v3 (the test skips, or fails under CI, without it)."""
    path = find_tool("helm")
    version = run([path, "version", "--template", "{{.Version}}"]).stdout
    assert re.match(r"v3\.\d+", version), version
    return path


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_path()


def template(
    helm: str,
    tmp: Path,
    values: Mapping[str, Any] | None = None,
    check: bool = True,
    schema: bool = True,
) -> Any:
    """`helm template` of the chart: its objects by (kind, name), or the failed process;
    without `schema`, values.schema.json is not applied (the template's own checks are)."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    if not schema:
        args.append("--skip-schema-validation")
    if values is not None:
        values_file = tmp / "values.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", str(values_file)]
    result = run(args, check=check)
    if not check:
        return result
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(rendered) == len(objects), "two objects of the same kind and name"
    return rendered


def only(objects: dict[tuple[str, str], Any], kind: str) -> Any:
    found = [o for (k, _), o in objects.items() if k == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(objects: dict[tuple[str, str], Any]) -> dict[str, Any]:
    (main,) = only(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return main  # type: ignore[no-any-return]


def env_of(main: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in main.get("env", [])}


@pytest.fixture(scope="module")
def default(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return template(helm, tmp_path_factory.mktemp("helm-default"))


@pytest.fixture(scope="module")
def custom(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return template(helm, tmp_path_factory.mktemp("helm-custom"), NON_DEFAULT)


def test_helm_lint(helm: str, tmp_path: Path) -> None:
    run([helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION])
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(NON_DEFAULT))
    run([helm, "lint", "--strict", str(CHART), "--values", str(values_file)])


def test_default_objects(default: Any) -> None:
    kinds = sorted(kind for kind, _ in default)
    assert kinds == ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"]
    assert not any(kind == "ServiceMonitor" for kind, _ in default)


def test_statefulset_keeps_the_buffer_on_a_claim(default: Any) -> None:
    sts = only(default, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {m["name"]: m["mountPath"] for m in container(default)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == DATA_DIR
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert claim["metadata"]["name"] not in volumes, "the claim, not a pod volume, holds data"
    assert env_of(container(default))["NATSBRIDGE_DATA_DIR"]["value"] == DATA_DIR
    headless = default[("Service", f"{RELEASE}-natsbridge-headless")]
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"


def test_probes_and_admin_port(default: Any) -> None:
    main = container(default)
    assert main["ports"] == [{"name": "admin", "containerPort": 7777, "protocol": "TCP"}]
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert main[probe]["httpGet"] == {"path": path, "port": "admin", "scheme": "HTTP"}
    args = parse_cli(main["args"])
    assert args.command == "run"
    assert args.config == "/etc/natsbridge/bridge.yaml"
    assert args.admin_listen == "0.0.0.0:7777"
    service = default[("Service", f"{RELEASE}-natsbridge")]
    assert service["spec"]["ports"][0]["targetPort"] == "admin"
    selector = service["spec"]["selector"]
    pod_labels = only(default, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


def test_non_root_read_only_and_bounded(default: Any) -> None:
    pod = only(default, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["fsGroup"] == 10001  # the claim is writable by it
    assert pod["automountServiceAccountToken"] is False
    main = container(default)
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {"/tmp", DATA_DIR}
    assert main["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert "memory" in main["resources"]["limits"]


def test_configmap_is_a_valid_config(default: Any, tmp_path: Path) -> None:
    configmap = default[("ConfigMap", f"{RELEASE}-natsbridge")]
    text = configmap["data"]["bridge.yaml"]
    assert isinstance(yaml.safe_load(text), dict)
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    natsbridge_validate(path)
    config = load_config(path, clean_env())
    assert config.bridge.data_dir == DATA_DIR
    pod = only(default, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > config.bridge.drain_timeout
    mounts = {m["name"]: m["mountPath"] for m in container(default)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert mounts["config"] == "/etc/natsbridge"


def test_non_default_values(custom: Any, tmp_path: Path) -> None:
    main = container(custom)
    assert main["image"] == "registry.example/natsbridge:9.9.9"
    env = env_of(main)
    for item in NON_DEFAULT["secretEnv"]:
        assert env[item["name"]]["valueFrom"]["secretKeyRef"] == {
            "name": item["secretName"],
            "key": item["key"],
        }
    assert env["NATSBRIDGE_NATS_URL"]["value"] == "nats://nats.messaging:4222"
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts["/run/secrets/nats-natsbridge"]["readOnly"] is True
    pod = only(custom, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The admin token is a file from its Secret, never in the environment.
    assert "NATSBRIDGE_ADMIN_TOKEN" not in env
    assert mounts["/run/natsbridge/admin"]["readOnly"] is True
    assert volumes[mounts["/run/natsbridge/admin"]["name"]]["secret"] == {
        "secretName": "natsbridge-admin",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    assert volumes[mounts["/run/secrets/nats-natsbridge"]["name"]]["secret"] == {
        "secretName": "nats-natsbridge",
        "defaultMode": 0o440,
    }
    assert pod["terminationGracePeriodSeconds"] == 100
    (claim,) = only(custom, "StatefulSet")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    # /readyz needs the token now: the probe reads it from the environment.
    readiness = main["readinessProbe"]
    assert "httpGet" not in readiness and "/readyz" in " ".join(readiness["exec"]["command"])
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"  # never needs the token


def test_non_default_config_validates_as_the_pod_reads_it(custom: Any, tmp_path: Path) -> None:
    """The rendered config with the Secrets' values: env from secretKeyRef, files where the
    secret volumes are mounted (/run/… relocated under a temporary directory)."""
    text = custom[("ConfigMap", f"{RELEASE}-natsbridge")]["data"]["bridge.yaml"]
    for mounted, content in SECRET_FILES.items():
        file = tmp_path / mounted.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content + "\n")
    path = tmp_path / "bridge.yaml"
    path.write_text(text.replace("${file:/run/", f"${{file:{tmp_path}/run/"))
    natsbridge_validate(path, SECRET_ENV)
    config = load_config(path, clean_env(SECRET_ENV))
    assert config.bridge.data_dir == DATA_DIR  # the chart puts the buffer on the claim
    assert config.bridge.admin.token is not None
    assert config.bridge.admin.token.get_secret_value() == "admin-token"
    nats = config.connections["nats"]
    assert nats.token is not None and nats.token.get_secret_value() == "nats-token"  # type: ignore[union-attr]
    assert parse_duration("90s") < 100


def test_service_monitor_only_when_enabled(custom: Any, default: Any) -> None:
    assert not [o for (k, _), o in default.items() if k == "ServiceMonitor"]
    monitor = only(custom, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "natsbridge-admin", "key": "token"}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    # It selects the admin Service and not the headless one (one scrape per pod).
    services = [o for (k, _), o in custom.items() if k == "Service"]
    selected = [
        s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in selected] == [f"{RELEASE}-natsbridge"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        operator = expression["operator"]
        assert operator in {"Exists", "DoesNotExist"}, operator
        if present != (operator == "Exists"):
            return False
    return True


def test_probe_commands_against_the_real_admin_server(custom: Any, tmp_path: Path) -> None:
    """The token-aware readiness probe's command: 0 with the right token, else non-zero."""
    from natsbridge.bridge.admin.server import AdminServer
    from natsbridge.bridge.config.model import Admin

    command = container(custom)["readinessProbe"]["exec"]["command"]
    assert command[:2] == [f"{VENV}/bin/python", "-c"]
    server = AdminServer(Admin(listen="127.0.0.1:0", token="right"), [])
    server.start()
    try:
        _, port = server.address
        token_file = tmp_path / "token"
        code = command[2].replace("127.0.0.1:7777", f"127.0.0.1:{port}")
        code = code.replace("/run/natsbridge/admin/token", str(token_file))
        assert code.count(str(token_file)) == 1 and f":{port}/" in code

        def probe(token: str) -> int:
            token_file.write_text(token + "\n")  # as a Secret's file may end
            env = {"PATH": "/usr/bin:/bin"}
            return run([sys.executable, "-c", code], env=env, check=False).returncode

        assert probe("right") == 0
        assert probe("wrong") != 0
    finally:
        server.close()


def test_grace_period_must_exceed_drain_timeout(helm: str, tmp_path: Path) -> None:
    def values(drain: object, grace: int) -> dict[str, Any]:
        config = {**NON_DEFAULT["config"], "bridge": {"id": "x", "drain_timeout": drain}}
        return {"config": config, "terminationGracePeriodSeconds": grace}

    refused = template(helm, tmp_path, values("2m", 45), check=False)
    assert refused.returncode != 0
    assert "terminationGracePeriodSeconds (45) must exceed" in refused.stderr
    assert "(120s)" in refused.stderr
    for drain, grace in (("1m", 61), (59.5, 60), ("250ms", 1), ("${env:DRAIN}", 10)):
        template(helm, tmp_path, values(drain, grace))
    for drain, grace in (("1.5m", 90), (60, 60)):
        assert template(helm, tmp_path, values(drain, grace), check=False).returncode != 0
    bad = template(helm, tmp_path, values("soon", 90), check=False)
    assert "at '/config/bridge/drain_timeout'" in bad.stderr  # values.schema.json
    bad = template(helm, tmp_path, values("soon", 90), check=False, schema=False)
    assert "config.bridge.drain_timeout: expected seconds" in bad.stderr


def test_without_persistence_the_pod_says_so(helm: str, tmp_path: Path) -> None:
    objects = template(helm, tmp_path, {"persistence": {"enabled": False}})
    sts = only(objects, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert "LOSES" in (CHART / "templates/NOTES.txt").read_text()
