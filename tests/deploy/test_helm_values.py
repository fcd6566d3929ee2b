"""The chart's values beyond the basics, through the real `helm template`: values.schema.json
(generated, and applied by helm), existingClaim, extra volumes/env/args, log level and
format, secrets only as mounted Secrets, and the PodDisruptionBudget.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.test_dockerfile import DATA_DIR
from tests.deploy.test_helm import (
    CHART,
    NON_DEFAULT,
    container,
    env_of,
    helm_path,
    only,
    template,
)
from tests.deploy.tools import parse_cli, run

GENERATOR = REPO_ROOT / "deploy/helm/values_schema.py"
EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_path()


def refusal(helm: str, tmp: Path, values: dict[str, Any], schema: bool = True) -> str:
    """helm's error for values the chart refuses (the test fails if it renders)."""
    result = template(helm, tmp, values, check=False, schema=schema)
    assert result.returncode != 0, f"rendered: {values}"
    return str(result.stderr)


def with_config(**changes: Any) -> dict[str, Any]:
    """NON_DEFAULT's config with some of its connections' keys changed."""
    config = json.loads(json.dumps(NON_DEFAULT["config"]))
    for name, keys in changes.items():
        config["connections"][name].update(keys)
    return {**NON_DEFAULT, "config": config}


def test_committed_schema_is_what_the_generator_makes(tmp_path: Path) -> None:
    run([sys.executable, str(GENERATOR), "--check"])
    chart = tmp_path / "natsbridge"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text() + "\n# A value added without regenerating.\nnew: 1\n")
    stale = run([sys.executable, str(GENERATOR), "--check", "--chart", str(chart)], check=False)
    assert stale.returncode == 1
    assert "values.schema.json is stale" in stale.stderr and '+    "new": {' in stale.stderr
    run([sys.executable, str(GENERATOR), "--chart", str(chart)])
    run([sys.executable, str(GENERATOR), "--check", "--chart", str(chart)])
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["properties"]["new"] == {
        "description": "A value added without regenerating.",
        "type": "integer",
    }


def test_schema_is_valid_and_takes_the_defaults_and_the_examples() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(defaults))
    assert not list(validator.iter_errors({**defaults, **NON_DEFAULT}))
    for name in ("kafka-nats", "mqtt-nats", "rabbitmq-nats"):
        config = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        assert not list(validator.iter_errors({**defaults, "config": config})), name
    # The STOMP example's passcodes fall back to a literal (${env:X:-admin}): a secret in
    # the manifest, which the chart refuses.
    stomp = yaml.safe_load((EXAMPLES / "stomp-nats.yaml").read_text())
    errors = list(validator.iter_errors({**defaults, "config": stomp}))
    assert {e.json_path.rpartition(".")[2] for e in errors} == {"passcode"}


def test_schema_refuses_typos_at_their_path(helm: str, tmp_path: Path) -> None:
    stderr = refusal(helm, tmp_path, {"replicaCont": 2})
    assert "additional properties 'replicaCont' not allowed" in stderr
    stderr = refusal(helm, tmp_path, {"persistence": {"existingclaim": "x"}})
    assert "at '/persistence': additional properties 'existingclaim'" in stderr
    stderr = refusal(helm, tmp_path, {"logLevel": "loud"})
    assert "at '/logLevel'" in stderr
    config = json.loads(json.dumps(NON_DEFAULT["config"]))
    config["connections"]["rabbit"]["urll"] = config["connections"]["rabbit"].pop("url")
    stderr = refusal(helm, tmp_path, {**NON_DEFAULT, "config": config})
    assert "at '/config/connections/rabbit': additional properties 'urll'" in stderr
    assert "kafka" not in stderr, "one error for the connection's kind, not one per kind"
    stderr = refusal(helm, tmp_path, with_config(rabbit={"kind": "amqpp"}))
    assert "at '/config/connections/rabbit/kind'" in stderr
    config = json.loads(json.dumps(NON_DEFAULT["config"]))
    config["routes"][0]["delivery"] = "sometimes"
    stderr = refusal(helm, tmp_path, {**NON_DEFAULT, "config": config})
    assert "at '/config/routes/0/delivery'" in stderr


def test_a_reference_stands_for_a_number_a_secret_must_be_one(helm: str, tmp_path: Path) -> None:
    config = json.loads(json.dumps(NON_DEFAULT["config"]))
    config["bridge"]["hop_limit"] = "${env:NATSBRIDGE_HOP_LIMIT}"
    config["routes"][0]["max_in_flight"] = "${env:NATSBRIDGE_IN_FLIGHT:-500}"
    template(helm, tmp_path, {**NON_DEFAULT, "config": config})
    config["bridge"]["hop_limit"] = "eight"
    assert "at '/config/bridge/hop_limit'" in refusal(helm, tmp_path, {"config": config})
    for literal in ("hunter2", "${env:KAFKA_PASSWORD:-hunter2}"):
        values = with_config(kafka={"sasl_password": literal})
        stderr = refusal(helm, tmp_path, values)
        assert "at '/config/connections/kafka/sasl_password'" in stderr
        assert literal in stderr
    admin = json.loads(json.dumps(NON_DEFAULT["config"]))
    admin["bridge"]["admin"] = {"token": "plain-token"}
    assert "at '/config/bridge/admin/token'" in refusal(helm, tmp_path, {"config": admin})
    template(helm, tmp_path, with_config(kafka={"sasl_password": "${file:/run/secrets/k/pw}"}))


def test_a_literal_secret_in_env_is_refused(helm: str, tmp_path: Path) -> None:
    literal = {"env": [{"name": "KAFKA_PASSWORD", "value": "hunter2"}]}
    stderr = refusal(helm, tmp_path, literal, schema=False)
    assert "env[0] KAFKA_PASSWORD: a literal value for a secret" in stderr
    assert "hunter2" not in stderr
    for name in ("NATS_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWD", "API_KEY"):
        refusal(helm, tmp_path, {"env": [{"name": name, "value": "x"}]}, schema=False)
    allowed = {
        "env": [
            {"name": "NATSBRIDGE_NATS_URL", "value": "nats://nats:4222"},
            {"name": "KAFKA_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "k", "key": "pw"}}},
        ]
    }
    env = env_of(container(template(helm, tmp_path, allowed)))
    assert env["KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "k", "key": "pw"}


def test_existing_claim_replaces_the_claim_per_pod(helm: str, tmp_path: Path) -> None:
    objects = template(helm, tmp_path, {"persistence": {"existingClaim": "bridge-buffer"}})
    sts = only(objects, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "bridge-buffer"}
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts["data"] == DATA_DIR
    stderr = refusal(
        helm, tmp_path, {"replicaCount": 2, "persistence": {"existingClaim": "bridge-buffer"}}
    )
    assert "persistence.existingClaim holds one buffer, and replicaCount is 2" in stderr
    # persistence.enabled=false wins: an emptyDir, whatever existingClaim says
    objects = template(helm, tmp_path, {"persistence": {"enabled": False, "existingClaim": "x"}})
    volumes = {
        v["name"]: v for v in only(objects, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_extra_volumes_env_and_args(helm: str, tmp_path: Path) -> None:
    values = {
        **NON_DEFAULT,
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
        "env": [{"name": "SSL_CERT_DIR", "value": "/etc/ssl/corporate"}],
        "envFrom": [{"configMapRef": {"name": "bridge-settings"}}],
        "extraArgs": ["--once"],
    }
    objects = template(helm, tmp_path, values)
    main = container(objects)
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ca"] == {"name": "ca", "configMap": {"name": "corporate-ca"}}
    assert {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in main[
        "volumeMounts"
    ]
    # the chart's own volumes and mounts are still there
    assert {"config", "tmp", "admin-token", "secret-nats-natsbridge"} <= volumes.keys()
    assert env_of(main)["SSL_CERT_DIR"]["value"] == "/etc/ssl/corporate"
    assert main["envFrom"] == [{"configMapRef": {"name": "bridge-settings"}}]
    args = parse_cli(main["args"])
    assert args.once is True and args.config == "/etc/natsbridge/bridge.yaml"


def test_log_level_and_format(helm: str, tmp_path: Path) -> None:
    args = parse_cli(container(template(helm, tmp_path))["args"])
    assert (args.log_level, args.log_format) == ("info", "json")
    objects = template(helm, tmp_path, {"logLevel": "debug", "logFormat": "text"})
    args = parse_cli(container(objects)["args"])
    assert (args.log_level, args.log_format) == ("debug", "text")


def test_pod_disruption_budget(helm: str, tmp_path: Path) -> None:
    assert not [o for (k, _), o in template(helm, tmp_path).items() if k == "PodDisruptionBudget"]
    objects = template(helm, tmp_path, {"podDisruptionBudget": {"enabled": True}})
    budget = only(objects, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]
    pod_labels = only(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    percent = {
        "replicaCount": 4,
        "podDisruptionBudget": {
            "enabled": True,
            "minAvailable": "50%",
            "maxUnavailable": None,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    spec = only(template(helm, tmp_path, percent), "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    both = {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}}
    assert "not both" in refusal(helm, tmp_path, both)
    neither = {"podDisruptionBudget": {"enabled": True, "maxUnavailable": None}}
    assert "set minAvailable or maxUnavailable" in refusal(helm, tmp_path, neither)
    assert "at '/podDisruptionBudget/minAvailable'" in refusal(
        helm, tmp_path, {"podDisruptionBudget": {"enabled": True, "minAvailable": "half"}}
    )


def notes(helm: str, tmp: Path, values: dict[str, Any]) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips it: a copy of the chart
    renders it into a ConfigMap through `tpl`)."""
    chart = tmp / "chart"
    shutil.copytree(CHART, chart, dirs_exist_ok=True)
    (chart / "notes-source.txt").write_text((CHART / "templates/NOTES.txt").read_text())
    (chart / "templates/notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes-source.txt") . | quote }}}\n'
    )
    values_file = tmp / "notes-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [helm, "template", "edge", str(chart), "--kube-version", "1.30.0"]
    out = run([*args, "--values", str(values_file), "--show-only", "templates/notes.yaml"])
    return str(yaml.safe_load(out.stdout)["data"]["notes"])


def test_notes_name_the_rule_the_budget_the_claim_and_a_budget_that_blocks_drains(
    helm: str, tmp_path: Path
) -> None:
    text = notes(helm, tmp_path, {})
    assert "PrometheusRule" not in text and "PodDisruptionBudget" not in text
    assert "Logs:    info, json" in text
    enabled = {"prometheusRule": {"enabled": True}, "podDisruptionBudget": {"enabled": True}}
    text = notes(helm, tmp_path, enabled)
    assert 'PrometheusRule edge-natsbridge on namespace="default",job="edge-natsbridge"' in text
    assert "PodDisruptionBudget edge-natsbridge." in text
    blocking = {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": None}}
    assert "blocks every node drain" in notes(helm, tmp_path, blocking)
    blocking["replicaCount"] = 2
    assert "blocks every node drain" not in notes(helm, tmp_path, blocking)
    text = notes(helm, tmp_path, {"persistence": {"existingClaim": "bridge-buffer"}})
    assert "Buffer:  PersistentVolumeClaim bridge-buffer (existingClaim)" in text


def test_lint_with_every_option_on(helm: str, tmp_path: Path) -> None:
    values = {
        **NON_DEFAULT,
        "persistence": {"existingClaim": "bridge-buffer"},
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate"}],
        "extraArgs": ["--once"],
        "logLevel": "warning",
        "logFormat": "text",
        "podDisruptionBudget": {"enabled": True},
        "prometheusRule": {"enabled": True, "additionalRules": [{"record": "r", "expr": "1"}]},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run([helm, "lint", "--strict", str(CHART), "--values", str(values_file)])
    assert "0 chart(s) failed" in result.stdout
    kinds = sorted(kind for kind, _ in template(helm, tmp_path, values))
    assert "PodDisruptionBudget" in kinds and "PrometheusRule" in kinds
