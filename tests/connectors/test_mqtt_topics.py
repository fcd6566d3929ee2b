"""MQTT topics and filters: validation, matching, and the reversible topic <-> subject map."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from natsbridge.bridge.errors import MappingError
from natsbridge.connectors.mqtt import topics
from natsbridge.mappings.subjects import is_valid_pattern, is_valid_subject
from natsbridge.mappings.subjects import match as subject_match

# Levels biased toward the awkward: dots, NATS wildcards, '%', spaces, non-ASCII, empty.
level = st.one_of(
    st.sampled_from(["", "a", "b", ".", "*", ">", "%", "a.b", "x y", "é", "$SYS", "😀"]),
    st.text(
        alphabet=st.characters(
            codec="utf-8", exclude_characters="/+#", categories=["L", "N", "P", "S", "Zs"]
        ),
        max_size=6,
    ),
)
topic_names = st.lists(level, min_size=1, max_size=6).map("/".join).filter(bool)
filter_levels = st.one_of(level, st.just("+"))


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(filter_levels, min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    text = "/".join(levels)
    assume(text)
    return text


@given(topic_names)
def test_topic_to_subject_round_trips_into_a_valid_subject(topic: str) -> None:
    topics.validate_topic(topic)
    subject = topics.topic_to_subject(topic)
    assert is_valid_subject(subject), subject
    assert subject.count(".") == topic.count("/")  # one token per level
    assert topics.subject_to_topic(subject) == topic


@given(topic_names, topic_names)
def test_topic_to_subject_is_injective(a: str, b: str) -> None:
    assume(a != b)
    assert topics.topic_to_subject(a) != topics.topic_to_subject(b)


@pytest.mark.parametrize(
    ("topic", "subject"),
    [
        ("sensors/press-7/temp", "sensors.press-7.temp"),
        ("v1.2/x", "v1%2E2.x"),
        ("a//b", "a.%.b"),
        ("/a", "%.a"),
        ("a/*/>", "a.%2A.%3E"),
        ("caf\u00e9 bar", "caf%C3%A9%20bar"),
    ],
)
def test_topic_to_subject_examples(topic: str, subject: str) -> None:
    assert topics.topic_to_subject(topic) == subject
    assert topics.subject_to_topic(subject) == topic


def test_subject_to_topic_refuses_what_escaping_cannot_produce() -> None:
    with pytest.raises(MappingError):
        topics.subject_to_topic("a.%2e")  # lower-case hex is never produced


@given(topic_filters(), topic_names)
def test_match_agrees_with_the_nats_patterns_of_the_filter(topic_filter: str, topic: str) -> None:
    topics.validate_filter(topic_filter)
    patterns = topics.filter_to_patterns(topic_filter)
    assert all(is_valid_pattern(p) for p in patterns), patterns
    captures = topics.match(topic_filter, topic)
    subject = topics.topic_to_subject(topic)
    in_nats = any(subject_match(p, subject) is not None for p in patterns)
    if topic.startswith("$") and topic_filter[0] in "+#":
        assert captures is None  # MQTT 4.7.2: wildcards do not reach $-topics
    else:
        assert (captures is not None) == in_nats, (topic_filter, topic, patterns)
    if captures is not None:
        assert len(captures) == topics.count_plus(topic_filter)
        assert all("/" not in c for c in captures)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "captures"),
    [
        ("sensors/+/temp", "sensors/press-7/temp", ("press-7",)),
        ("sensors/+/temp", "sensors/press-7/hum", None),
        ("sensors/+/temp", "sensors/a/b/temp", None),
        ("a/#", "a", ()),
        ("a/#", "a/b/c", ()),
        ("a/+/#", "a/b/c/d", ("b",)),
        ("#", "x/y", ()),
        ("#", "$SYS/x", None),
        ("+/x", "$SYS/x", None),
        ("$SYS/#", "$SYS/x", ()),
        ("+/+", "/", ("", "")),
    ],
)
def test_match_examples(topic_filter: str, topic: str, captures: tuple[str, ...] | None) -> None:
    assert topics.match(topic_filter, topic) == captures


@pytest.mark.parametrize(
    ("topic_filter", "patterns"),
    [
        ("sensors/+/temp", ("sensors.*.temp",)),
        ("a/#", ("a", "a.>")),
        ("#", (">",)),
        ("a.b/+", ("a%2Eb.*",)),
    ],
)
def test_filter_to_patterns_examples(topic_filter: str, patterns: tuple[str, ...]) -> None:
    assert topics.filter_to_patterns(topic_filter) == patterns


@pytest.mark.parametrize(
    "bad",
    ["", "a/#/b", "a/b#", "a+/b", "a/\x00", "a\x01", "a\x7f", "a\x85", "a\ufffe", "a\ud800"],
)
def test_validate_filter_refuses(bad: str) -> None:
    with pytest.raises(MappingError):
        topics.validate_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "x\x00", "x\x1f", "x\U0010ffff", "x" * 65536])
def test_validate_topic_refuses(bad: str) -> None:
    with pytest.raises(MappingError):
        topics.validate_topic(bad)


def test_count_plus() -> None:
    assert topics.count_plus("a/+/b/+/#") == 2
    assert topics.count_plus("a/b") == 0
