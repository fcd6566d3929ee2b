"""The chart's PrometheusRule, through the real `helm template`: its alerts (route down,
buffer age, dead letters), their settings, and that every series and label they read is
one the real admin server's /metrics serves (a renamed metric breaks this test, not the
alerts in production).
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT
from tests.deploy.test_helm import (
    NAMESPACE,
    NON_DEFAULT,
    RELEASE,
    helm_path,
    only,
    template,
)

EXAMPLES_CONFIG = REPO_ROOT / "examples/rabbitmq-nats.yaml"
ALERTS = ("NatsbridgeRouteDown", "NatsbridgeBufferAge", "NatsbridgeDeadLetters")
SCRAPE_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}
"""Labels Prometheus adds to every series it scrapes through a ServiceMonitor."""


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_path()


def rules_of(objects: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    (group,) = only(objects, "PrometheusRule")["spec"]["groups"]
    return {rule.get("alert") or rule.get("record"): rule for rule in group["rules"]}


def served_series() -> dict[str, set[str]]:
    """Each series the admin server's /metrics serves, with its labels, for one route that
    dead-lettered a message (so that every family has a sample)."""
    from natsbridge.bridge.admin.server import AdminServer
    from natsbridge.bridge.config import load_config
    from natsbridge.bridge.config.model import Admin
    from natsbridge.bridge.runtime.route import RouteRunner

    route = load_config(EXAMPLES_CONFIG, {}).routes[0]
    runner = RouteRunner(route, None, None, None, None)  # type: ignore[arg-type]
    runner.stats.dead_letter("poison")
    server = AdminServer(Admin(listen="127.0.0.1:0"), [runner])
    server.start()
    try:
        _, port = server.address
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.close()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_no_rule_unless_enabled(helm: str, tmp_path: Path) -> None:
    assert not [o for (k, _), o in template(helm, tmp_path).items() if k == "PrometheusRule"]


def test_alerts_and_their_settings(helm: str, tmp_path: Path) -> None:
    objects = template(helm, tmp_path, {**NON_DEFAULT, "prometheusRule": {"enabled": True}})
    rule = only(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules = rules_of(objects)
    assert tuple(rules) == ALERTS
    # The default selector is the series the chart's ServiceMonitor scrapes: its job is the
    # admin Service's name.
    monitor = only(objects, "ServiceMonitor")
    service = f"{RELEASE}-natsbridge"
    assert ("Service", service) in objects
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    for alert in rules.values():
        assert f'{{namespace="{NAMESPACE}",job="{service}"}}' in alert["expr"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert "{{ $labels.route }}" in alert["annotations"]["summary"]
    assert rules["NatsbridgeRouteDown"]["for"] == "5m"
    assert rules["NatsbridgeRouteDown"]["labels"] == {"severity": "critical"}
    assert rules["NatsbridgeBufferAge"]["expr"].endswith(" > 300")
    assert "[15m]" in rules["NatsbridgeDeadLetters"]["expr"]
    assert rules["NatsbridgeDeadLetters"]["expr"].endswith(" > 0")

    settings = {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "alertLabels": {"team": "messaging"},
        "selector": 'cluster="dc1",app="bridge"',
        "routeDown": {"enabled": False},
        "bufferAge": {"seconds": 60, "for": "2m", "severity": "critical"},
        "deadLetters": {"window": "1h", "threshold": 10},
        "additionalRules": [{"record": "natsbridge:in:rate5m", "expr": "1"}],
    }
    objects = template(helm, tmp_path, {"prometheusRule": settings})
    assert only(objects, "PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"
    rules = rules_of(objects)
    assert tuple(rules) == (*ALERTS[1:], "natsbridge:in:rate5m")
    age = rules["NatsbridgeBufferAge"]
    assert age["expr"].endswith('{cluster="dc1",app="bridge"}) > 60')
    assert (age["for"], age["labels"]) == ("2m", {"severity": "critical", "team": "messaging"})
    dead = rules["NatsbridgeDeadLetters"]["expr"]
    assert '{cluster="dc1",app="bridge"}[1h]' in dead and dead.endswith(" > 10")


def test_every_series_and_label_the_alerts_read_is_served(helm: str, tmp_path: Path) -> None:
    rules = rules_of(template(helm, tmp_path, {"prometheusRule": {"enabled": True}}))
    served = served_series()
    for name, rule in rules.items():
        expr = rule["expr"]
        (metric,) = set(re.findall(r"\bnatsbridge_[a-z_]+", expr))
        assert metric in served, f"{name} reads {metric}, which /metrics does not serve"
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            missing = labels - SCRAPE_LABELS - served[metric]
            assert not missing, f"{name} groups {metric} by {missing}, which it does not have"
