"""The chart's PrometheusRule, through the real `helm template`: its alerts (route down,
buffer age, dead letters), their settings, that every series and label they read is one
the real admin server's /metrics serves (a renamed metric breaks this test, not the alerts
in production), and when they fire, by Prometheus's own rule evaluator (`promtool test
rules`; `bash deploy/helm/install-promtool.sh` installs it).
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
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
from tests.deploy.tools import find_tool, run

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


def test_alerts_fire_when_they_should_as_prometheus_evaluates_them(
    helm: str, tmp_path: Path
) -> None:
    """promtool evaluates the rendered rules over series shaped like /metrics': each alert
    fires after its `for`, not before, only for this release's series."""
    promtool = find_tool("promtool")
    objects = template(helm, tmp_path, {"prometheusRule": {"enabled": True}})
    groups = only(objects, "PrometheusRule")["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    assert (
        "SUCCESS: 3 rules found"
        in run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path).stdout
    )
    rules = rules_of(objects)
    pod = f"{RELEASE}-natsbridge-0"
    ours = f'namespace="{NAMESPACE}",job="{RELEASE}-natsbridge",pod="{pod}"'
    series = [
        # orders: down from minute 2; clicks: up all along; another release's: down all along
        (f'natsbridge_route_up{{{ours},route="orders"}}', "1 1 0x20"),
        (f'natsbridge_route_up{{{ours},route="clicks"}}', "1x22"),
        ('natsbridge_route_up{namespace="other",job="x",pod="x-0",route="orders"}', "0x22"),
        # the oldest buffered message ages a minute a minute: over 300 s from minute 6
        (f'natsbridge_buffer_oldest_age_seconds{{{ours},route="orders"}}', "0+60x22"),
        (f'natsbridge_buffer_oldest_age_seconds{{{ours},route="clicks"}}', "0x22"),
        # three dead letters at minute 16
        (f'natsbridge_dead_lettered_total{{{ours},route="orders",reason="poison"}}', "0x15 3x6"),
        (f'natsbridge_dead_lettered_total{{{ours},route="clicks",reason="poison"}}', "0x22"),
    ]

    def fired(name: str, summary: str, **labels: str) -> list[dict[str, Any]]:
        rule = rules[name]
        return [
            {
                "exp_labels": {"namespace": NAMESPACE, "pod": pod, "route": "orders", **labels},
                "exp_annotations": {
                    "summary": summary,
                    "description": rule["annotations"]["description"],
                },
            }
        ]

    down = fired(
        "NatsbridgeRouteDown", f"natsbridge route orders on {pod} is down", severity="critical"
    )
    old = fired(
        "NatsbridgeBufferAge",
        f"natsbridge route orders on {pod}: oldest buffered message 12m 0s old",
        severity="warning",
    )
    dead = fired(
        "NatsbridgeDeadLetters",
        f"natsbridge route orders on {pod} dead-lettered 3 messages (poison)",
        severity="warning",
        reason="poison",
    )
    checks = [
        ("NatsbridgeRouteDown", "6m", []),  # down for 4 of its 5 minutes
        ("NatsbridgeRouteDown", "8m", down),
        ("NatsbridgeBufferAge", "10m", []),  # over 300 s for 4 of its 5 minutes
        ("NatsbridgeBufferAge", "12m", old),
        ("NatsbridgeDeadLetters", "15m", []),
        ("NatsbridgeDeadLetters", "20m", dead),
    ]
    unit_test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, "exp_alerts": alerts}
                    for name, at, alerts in checks
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(unit_test))
    result = run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path)
    assert "SUCCESS" in result.stdout
