"""Dead letters' pure parts: the rate-limited warning, `dead_letters:` in the config, and
the admin API's reading of a /api/dlq request."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.admin.server import dlq_request
from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.describe import describe_route
from natsbridge.bridge.config.model import Delivery
from natsbridge.bridge.errors import ConfigError
from natsbridge.bridge.runtime.dead_letters import DeadLetterWarnings

CONFIG = """\
version: 1
bridge: {id: b1}
connections:
  nats: {kind: nats, servers: ["nats://127.0.0.1:4222"]}
  kafka: {kind: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
routes:
  - name: orders
    from: {connection: nats, subject: "in.>"}
    to: {connection: kafka, topic: "out"}
    delivery: exactly_once
    max_payload: 100
    dead_letters: DEAD
"""


def load(tmp_path: Path, dead_letters: str) -> object:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.replace("DEAD", dead_letters))
    return load_config(path, {})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_warning_per_window_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    warnings = DeadLetterWarnings(logging.getLogger("test.dead"), window=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.dead"):
        for i in range(313):
            warnings.warn("dead-lettered %d", i, extra={"event": "dead_lettered"})
        assert [r.getMessage() for r in caplog.records] == ["dead-lettered 0"]
        warnings.flush()
        assert caplog.records[-1].getMessage() == (
            "... and 312 more dead-lettered in 10 s (natsbridge dlq show)"
        )
        clock.now += 11
        warnings.warn("dead-lettered %d", 313, extra={"event": "dead_lettered"})
        assert caplog.records[-1].getMessage() == "dead-lettered 313"
        warnings.flush()  # nothing more to say
        assert len(caplog.records) == 3


def test_dead_letters_is_a_to_of_its_connections_kind(tmp_path: Path) -> None:
    config = load(tmp_path, '{connection: kafka, topic: "dlq-{{subject}}"}')
    [route] = config.routes  # type: ignore[attr-defined]
    target = route.dead_letters
    assert (target.sink_kind, target.sink.topic) == ("kafka", "dlq-{{subject}}")
    assert target.spec.delivery is Delivery.AT_LEAST_ONCE  # no transactions for dead letters
    assert target.spec.max_payload is None  # the dead letter may be what broke the limit
    assert route.spec.delivery is Delivery.EXACTLY_ONCE and route.spec.max_payload == 100
    assert describe_route(route).endswith(
        "(exactly_once, dead letters -> kafka:topic dlq-{{subject}})"
    )
    assert load(tmp_path, "null").routes[0].dead_letters is None  # type: ignore[attr-defined]


def test_a_route_without_a_buffer_has_no_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    text = CONFIG.replace("DEAD", "{connection: kafka, topic: t}")
    path.write_text(text.replace("exactly_once", "at_most_once"))
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    [problem] = info.value.problems
    assert ":12:" in problem and "routes[0].dead_letters: only a buffered route" in problem


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("{connection: kafak, topic: t}", "routes[0].dead_letters.connection: no connection named"),
        ("{connection: kafka, subject: t}", "routes[0].dead_letters"),
        ("{connection: kafka, topic: t, topik: x}", "topik"),
        ("kafka", "routes[0].dead_letters: expected a valid dictionary, found 'kafka'"),
        ('{connection: kafka, topic: "{{nope}}"}', "routes[0].dead_letters.topic: in template"),
    ],
)
def test_a_wrong_dead_letters_is_one_positioned_line(
    tmp_path: Path, written: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, written)
    problems = info.value.problems
    assert any(expected in problem and ":12:" in problem for problem in problems), problems
    assert all("\n" not in problem for problem in problems)


@given(
    stream=st.one_of(st.none(), st.text(min_size=1)),
    verb=st.one_of(st.none(), st.sampled_from(["replay", "purge"])),
    query=st.text(),
)
def test_any_dlq_request_reads_as_one_action(
    stream: str | None, verb: str | None, query: str
) -> None:
    asked = json.loads(dlq_request(stream, verb, f"/api/dlq?{query}"))
    assert asked["action"] in ("ls", "show", "replay", "purge")
    if asked["action"] == "show":
        assert isinstance(asked["from_seq"], int)
        assert isinstance(asked["limit"], int)
    if asked["action"] in ("replay", "purge"):
        seqs = asked["seqs"]
        assert seqs is None or all(isinstance(seq, int) and seq >= 0 for seq in seqs)


def test_a_replay_or_purge_takes_every_dead_letter_only_when_asked() -> None:
    assert json.loads(dlq_request("s", "purge", "/api/dlq/s/purge"))["seqs"] == []
    assert json.loads(dlq_request("s", "purge", "/api/dlq/s/purge?all=1"))["seqs"] is None
    asked = json.loads(dlq_request("s", "replay", "/api/dlq/s/replay?seq=3&seq=5"))
    assert asked == {"action": "replay", "stream": "s", "seqs": [3, 5]}
