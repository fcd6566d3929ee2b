"""The chart's workload through the real `helm template`: a StatefulSet with a buffer claim
per pod when a route buffers on local disk, a Deployment when every buffer is jetstream or
none (replicas own no message), topology spread and the PodDisruptionBudget over replicas.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_helm import CHART, NON_DEFAULT, helm_path, only, template
from tests.deploy.test_helm_values import notes, refusal
from tests.deploy.tools import run


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_path()


def kinds(objects: dict[tuple[str, str], Any]) -> list[str]:
    return sorted(kind for kind, _ in objects)


def pod_spec(workload: Any) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_deployment_has_no_claim_and_no_headless_service(helm: str, tmp_path: Path) -> None:
    values = {"workload": "Deployment", "replicaCount": 3}
    objects = template(helm, tmp_path, values)
    assert kinds(objects) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "emptyDir, holding only the dead letters" in notes(helm, tmp_path, values)


def test_statefulset_by_default_with_a_claim_per_pod(helm: str, tmp_path: Path) -> None:
    objects = template(helm, tmp_path, {"replicaCount": 2})
    assert "StatefulSet" in kinds(objects) and "Deployment" not in kinds(objects)
    sts = only(objects, "StatefulSet")
    assert [claim["metadata"]["name"] for claim in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    assert "data" not in {v["name"] for v in pod_spec(sts)["volumes"]}


def test_replicas_spread_over_nodes_and_zones(helm: str, tmp_path: Path) -> None:
    for workload in ("StatefulSet", "Deployment"):
        objects = template(helm, tmp_path, {"workload": workload, "replicaCount": 3})
        spec = pod_spec(only(objects, workload))
        pod_labels = only(objects, workload)["spec"]["template"]["metadata"]["labels"]
        constraints = spec["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in constraints] == [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        ]
        for constraint in constraints:
            assert constraint["maxSkew"] == 1
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
            assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    strict = {"topologySpread": {"whenUnsatisfiable": "DoNotSchedule", "topologyKeys": ["rack"]}}
    (constraint,) = pod_spec(only(template(helm, tmp_path, strict), "StatefulSet"))[
        "topologySpreadConstraints"
    ]
    assert constraint["topologyKey"] == "rack"
    assert constraint["whenUnsatisfiable"] == "DoNotSchedule"
    off = template(helm, tmp_path, {"topologySpread": {"enabled": False}})
    assert "topologySpreadConstraints" not in pod_spec(only(off, "StatefulSet"))


def test_budget_covers_the_deployment_replicas(helm: str, tmp_path: Path) -> None:
    values = {
        "workload": "Deployment",
        "replicaCount": 3,
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    }
    objects = template(helm, tmp_path, values)
    budget = only(objects, "PodDisruptionBudget")
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


def test_existing_claim_on_a_deployment_and_refused_for_replicas(helm: str, tmp_path: Path) -> None:
    one = {"workload": "Deployment", "persistence": {"existingClaim": "bridge-data"}}
    deployment = only(template(helm, tmp_path, one), "Deployment")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "bridge-data"}
    assert "two bridges never share a buffer" in refusal(helm, tmp_path, {**one, "replicaCount": 2})


def test_workload_must_be_one_the_chart_knows(helm: str, tmp_path: Path) -> None:
    assert "/workload" in refusal(helm, tmp_path, {"workload": "DaemonSet"})


def test_lint_a_deployment_with_every_option(helm: str, tmp_path: Path) -> None:
    values = copy.deepcopy(NON_DEFAULT)
    values.update(workload="Deployment", replicaCount=3)
    values["podDisruptionBudget"] = {"enabled": True}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    run([helm, "lint", "--strict", str(CHART), "--values", str(values_file)])


def with_buffers(bridge: Any, *routes: Any) -> dict[str, Any]:
    """NON_DEFAULT with bridge.buffer and each route's buffer (None: not written)."""
    values = copy.deepcopy(NON_DEFAULT)
    config = values["config"]
    if bridge is not None:
        config["bridge"]["buffer"] = bridge
    for route, buffer in zip(config["routes"], routes, strict=False):
        if buffer is not None:
            route["buffer"] = buffer
    return values


def test_workload_follows_the_buffer_modes(helm: str, tmp_path: Path) -> None:
    cases = [
        (with_buffers("none"), "Deployment"),
        (with_buffers({"mode": "none"}), "Deployment"),
        (with_buffers(None, "none", "none"), "Deployment"),
        (with_buffers("none", None, "embedded"), "StatefulSet"),
        (with_buffers("none", None, {"max_msgs": 10}), "Deployment"),  # inherits none
        (with_buffers(None, "none"), "StatefulSet"),  # the other route is embedded
        (with_buffers("embedded"), "StatefulSet"),
    ]
    for values, workload in cases:
        objects = template(helm, tmp_path, values)
        assert workload in kinds(objects), (values["config"], kinds(objects))
