"""What a reload does to each route (bridge.runtime.reload): pure logic over loaded configs.

The property test compares the diff of two loaded configs with an oracle written over
the YAML dictionaries they came from: a route is unchanged exactly when its own entry,
the connections it uses and the route-relevant `bridge` settings are equal.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsbridge.bridge.config import Config, load_config
from natsbridge.bridge.runtime.reload import diff_routes, fixed_setting_problems

_files = itertools.count()


def base() -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": "dc1", "data_dir": "/tmp/unused"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": "amqp://guest:guest@127.0.0.1:5672/%2F"},
            "nats": {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]},
        },
        "routes": [],
    }


def route(name: str, exchange: str = "orders", stream: str = "ORDERS") -> dict[str, Any]:
    return {
        "name": name,
        "from": {"connection": "rabbit", "exchange": exchange, "binding_keys": ["#"]},
        "to": {
            "connection": "nats",
            "subject": "o.{{routing_key}}",
            "jetstream": {"stream": stream},
        },
    }


def back(name: str, subject: str = "ship.*") -> dict[str, Any]:
    return {
        "name": name,
        "from": {"connection": "nats", "subject": subject, "jetstream": {"stream": "SHIP"}},
        "to": {"connection": "rabbit", "exchange": "ship", "routing_key": "{{wildcard(1)}}"},
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Config:
    path = tmp_path / f"bridge-{next(_files)}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, {})


def test_added_removed_changed_and_unchanged_routes(tmp_path: Path) -> None:
    old = base()
    old["routes"] = [route("keep"), route("edit"), route("drop"), back("back")]
    new = base()
    new["routes"] = [back("back"), route("edit", exchange="orders2"), route("keep"), route("new")]
    diff = diff_routes(load(tmp_path, old), load(tmp_path, new))
    assert diff.added == ["new"]
    assert diff.removed == ["drop"]
    assert diff.changed == ["edit"]
    assert diff.unchanged == ["back", "keep"]  # the new file's order; moving is no change


def test_a_connection_change_restarts_only_the_routes_that_use_it(tmp_path: Path) -> None:
    old = base()
    old["connections"]["other"] = {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}
    old["routes"] = [route("via-nats"), back("from-other")]
    old["routes"][1]["from"]["connection"] = "other"
    new = yaml.safe_load(yaml.safe_dump(old))
    new["connections"]["nats"]["servers"] = ["nats://127.0.0.1:4223"]
    diff = diff_routes(load(tmp_path, old), load(tmp_path, new))
    assert diff.changed == ["via-nats"]
    assert diff.unchanged == ["from-other"]


def test_a_new_password_restarts_the_routes_that_use_it(tmp_path: Path) -> None:
    old = base()
    old["connections"]["nats"]["password"] = "first"
    old["connections"]["nats"]["user"] = "bridge"
    old["routes"] = [route("orders")]
    new = yaml.safe_load(yaml.safe_dump(old))
    new["connections"]["nats"]["password"] = "second"
    assert diff_routes(load(tmp_path, old), load(tmp_path, new)).changed == ["orders"]
    same = diff_routes(load(tmp_path, old), load(tmp_path, old))
    assert same.unchanged == ["orders"]


def test_bridge_settings_routes_read_restart_every_route(tmp_path: Path) -> None:
    old = base()
    old["routes"] = [route("a"), back("b")]
    for key, value in [("id", "dc2"), ("hop_limit", 3), ("buffer", {"max_msgs": 10})]:
        new = yaml.safe_load(yaml.safe_dump(old))
        new["bridge"][key] = value
        assert diff_routes(load(tmp_path, old), load(tmp_path, new)).changed == ["a", "b"], key
    new = yaml.safe_load(yaml.safe_dump(old))
    new["bridge"]["drain_timeout"] = "5s"  # applies at once, restarts nothing
    assert diff_routes(load(tmp_path, old), load(tmp_path, new)).unchanged == ["a", "b"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("data_dir", "/tmp/elsewhere"), ("admin", {"listen": "127.0.0.1:7778"})],
)
def test_restart_only_settings_are_refused_with_their_position(
    tmp_path: Path, key: str, value: Any
) -> None:
    old = base()
    old["routes"] = [route("a")]
    new = yaml.safe_load(yaml.safe_dump(old))
    new["bridge"][key] = value
    running, loaded = load(tmp_path, old), load(tmp_path, new)
    (problem,) = fixed_setting_problems(running, loaded)
    line = next(
        number
        for number, text in enumerate(Path(loaded.path).read_text().splitlines(), 1)
        if text.strip().startswith(f"{key}:")
    )
    assert problem.startswith(f"{loaded.path}:{line}:")
    assert f"bridge.{key}: cannot change in a running bridge" in problem
    assert fixed_setting_problems(running, load(tmp_path, old)) == []


# ---------------------------------------------------------------- property


NAMES = ("a", "b", "c", "d")
route_entries = st.one_of(
    st.builds(
        lambda e, s: ("route", e, s), st.sampled_from(["x", "y"]), st.sampled_from(["S", "T"])
    ),
    st.builds(lambda s: ("back", s, ""), st.sampled_from(["p.*", "q.*"])),
)
configs = st.fixed_dictionaries(
    {
        "routes": st.dictionaries(st.sampled_from(NAMES), route_entries, max_size=len(NAMES)),
        "bridge_id": st.sampled_from(["dc1", "dc2"]),
        "drain": st.sampled_from(["5s", "30s"]),
        "nats_server": st.sampled_from(["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]),
    }
)


def build(drawn: dict[str, Any]) -> dict[str, Any]:
    data = base()
    data["bridge"]["id"] = drawn["bridge_id"]
    data["bridge"]["drain_timeout"] = drawn["drain"]
    data["connections"]["nats"]["servers"] = [drawn["nats_server"]]
    data["routes"] = [
        route(name, one, two) if shape == "route" else back(name, one)
        for name, (shape, one, two) in drawn["routes"].items()
    ]
    return data


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=configs, new=configs.filter(lambda drawn: bool(drawn["routes"])))
def test_diff_agrees_with_the_yaml(
    tmp_path: Path, old: dict[str, Any], new: dict[str, Any]
) -> None:
    if not old["routes"]:
        old = {**old, "routes": {"z": ("route", "x", "S")}}
    before, after = build(old), build(new)
    diff = diff_routes(load(tmp_path, before), load(tmp_path, after))
    old_routes = {r["name"]: r for r in before["routes"]}
    new_routes = {r["name"]: r for r in after["routes"]}
    same_bridge = before["bridge"]["id"] == after["bridge"]["id"]
    expected: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": []}
    for name, entry in new_routes.items():
        if name not in old_routes:
            expected["added"].append(name)
            continue
        used = {entry["from"]["connection"], entry["to"]["connection"]}
        same = (
            same_bridge
            and old_routes[name] == entry
            and all(before["connections"][c] == after["connections"][c] for c in used)
        )
        expected["unchanged" if same else "changed"].append(name)
    assert diff.added == expected["added"]
    assert diff.changed == expected["changed"]
    assert diff.unchanged == expected["unchanged"]
    assert diff.removed == [name for name in old_routes if name not in new_routes]
