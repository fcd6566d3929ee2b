"""Address translations: round trips, validity of every subject, injectivity."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from natsbridge.bridge.errors import MappingError, SubjectError
from natsbridge.mappings import amqp, kafka, stomp
from natsbridge.mappings.escaping import (
    escape_bytes_words,
    escape_token,
    escape_words,
    unescape_bytes_words,
    unescape_token,
    unescape_words,
)
from natsbridge.mappings.subjects import is_valid_pattern, is_valid_subject, match

# Text biased toward the awkward characters: dots, wildcards, '%', whitespace, non-ASCII.
awkward = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("ab.*>%# \t\r\n\x00é€😀$:/")),
        st.characters(codec="utf-8"),
    ),
    max_size=20,
)
routing_keys = st.one_of(awkward, st.text(max_size=20))
topics = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=40).filter(
    lambda t: t not in (".", "..")
)


# --- escaping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "token"),
    [
        ("eu", "eu"),
        ("a*b", "a*b"),
        ("", "%"),
        ("*", "%2A"),
        (">", "%3E"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("café", "caf%C3%A9"),
        ("a.b", "a%2Eb"),
        ("\ud800", "%ED%A0%80"),  # a lone surrogate survives too
    ],
)
def test_escape_token_examples(word: str, token: str) -> None:
    assert escape_token(word) == token
    assert unescape_token(token) == word


@pytest.mark.parametrize("bad", ["%", "a%2", "%41", "%2a", "a b", "*", "%FF"])
def test_unescape_refuses_what_escaping_cannot_produce(bad: str) -> None:
    if bad == "%":
        assert unescape_token(bad) == ""
        return
    with pytest.raises(MappingError):
        unescape_token(bad)


@given(routing_keys)
def test_escape_words_round_trip(text: str) -> None:
    subject = escape_words(text)
    assert is_valid_subject(subject)
    assert unescape_words(subject) == text


@given(routing_keys, routing_keys)
def test_escape_words_injective(a: str, b: str) -> None:
    assume(a != b)
    assert escape_words(a) != escape_words(b)


@given(st.binary(max_size=20))
def test_escape_bytes_round_trip(data: bytes) -> None:
    subject = escape_bytes_words(data)
    assert is_valid_subject(subject)
    assert unescape_bytes_words(subject) == data


@given(st.text(max_size=10))
def test_text_and_bytes_escape_alike(text: str) -> None:
    assert escape_bytes_words(text.encode("utf-8", "surrogatepass")) == escape_words(text)


# --- AMQP ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routing_key", "subject"),
    [("eu.created", "eu.created"), ("a..b", "a.%.b"), (".a", "%.a"), ("a.", "a.%"), ("", "%")],
)
def test_routing_key_examples(routing_key: str, subject: str) -> None:
    assert amqp.routing_key_to_subject(routing_key) == subject
    assert amqp.subject_to_routing_key(subject) == routing_key


@given(routing_keys)
def test_routing_key_round_trip(routing_key: str) -> None:
    subject = amqp.routing_key_to_subject(routing_key)
    assert is_valid_subject(subject)
    assert amqp.subject_to_routing_key(subject) == routing_key


@given(routing_keys, routing_keys)
def test_routing_key_injective(a: str, b: str) -> None:
    assume(a != b)
    assert amqp.routing_key_to_subject(a) != amqp.routing_key_to_subject(b)


def test_routing_key_length() -> None:
    amqp.validate_routing_key("x" * 255)
    with pytest.raises(MappingError, match="256 bytes"):
        amqp.validate_routing_key("x" * 256)


@pytest.mark.parametrize(
    ("binding_key", "patterns"),
    [
        ("#", (">",)),
        ("orders.#", ("orders", "orders.>")),
        ("*.#", ("*", "*.>")),
        ("orders.*", ("orders.*",)),
        ("a b.*", ("a%20b.*",)),
        ("a#b.x", ("a#b.x",)),
        ("", ("%",)),
    ],
)
def test_binding_key_to_patterns(binding_key: str, patterns: tuple[str, ...]) -> None:
    assert amqp.binding_key_to_patterns(binding_key) == patterns


def test_hash_in_the_middle_is_refused() -> None:
    with pytest.raises(SubjectError, match=re.escape("'#' at position 2 in binding key 'a.#.b'")):
        amqp.binding_key_to_patterns("a.#.b")


binding_words = st.sampled_from(["a", "b", "", "*", "#", "a b"])


@given(
    st.lists(binding_words, min_size=1, max_size=4),
    st.lists(st.sampled_from(["a", "b", "", "a b"]), max_size=5),
)
def test_binding_patterns_select_the_same_keys(words: list[str], key_words: list[str]) -> None:
    """The NATS patterns of a binding key match exactly the escaped keys AMQP would route."""
    assume("#" not in words[:-1])
    binding_key = ".".join(words)
    routing_key = ".".join(key_words)
    patterns = amqp.binding_key_to_patterns(binding_key)
    assert all(is_valid_pattern(p) for p in patterns)
    subject = amqp.routing_key_to_subject(routing_key)
    nats_says = any(match(p, subject) is not None for p in patterns)
    assert nats_says == (amqp.topic_match(binding_key, routing_key) is not None)


@pytest.mark.parametrize(
    ("binding_key", "routing_key", "captures"),
    [
        ("orders.*", "orders.eu", ("eu",)),
        ("orders.*", "orders.eu.x", None),
        ("#", "", ()),
        ("#", "a.b", ()),
        ("a.#", "a", ()),
        ("a.#.z", "a.z", ()),
        ("a.#.*.z", "a.b.c.z", ("c",)),
        ("*.#.*", "x", None),
        ("*.*", "a.", ("a", "")),
        ("a.#.#.b", "a.x.y.b", ()),
    ],
)
def test_topic_match(binding_key: str, routing_key: str, captures: tuple[str, ...] | None) -> None:
    assert amqp.topic_match(binding_key, routing_key) == captures


# --- Kafka ---------------------------------------------------------------------------


@given(topics)
def test_topic_round_trips(topic: str) -> None:
    subject = kafka.topic_to_subject(topic)
    assert is_valid_subject(subject)
    assert kafka.subject_to_topic(subject) == topic
    token = kafka.topic_to_token(topic)
    assert is_valid_subject(token) and "." not in token
    assert kafka.token_to_topic(token) == topic


@given(topics, topics)
def test_topic_injective(a: str, b: str) -> None:
    assume(a != b)
    assert kafka.topic_to_subject(a) != kafka.topic_to_subject(b)
    assert kafka.topic_to_token(a) != kafka.topic_to_token(b)


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("", "not a legal"),
        ("..", "not a legal"),
        ("a b", "character ' ' at offset 1"),
        ("x" * 250, "250 characters"),
        ("é", "character 'é'"),
    ],
)
def test_bad_topics(topic: str, fragment: str) -> None:
    with pytest.raises(MappingError, match=fragment):
        kafka.validate_topic(topic)


def test_subject_to_topic_validates() -> None:
    with pytest.raises(MappingError):
        kafka.subject_to_topic("a%20b")


# --- STOMP ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "dialect", "subject"),
    [
        ("/topic/quotes.NYSE", "activemq", "topic.quotes.NYSE"),
        ("/queue/a b", "activemq", "queue.a%20b"),
        ("/temp-topic/t1", "activemq", "temp-topic.t1"),
        ("/amq/queue/q", "rabbitmq", "amq-queue.q"),
        ("/exchange/amq.topic/x.y", "rabbitmq", "exchange.amq%2Etopic.x.y"),
        ("/exchange/logs", "rabbitmq", "exchange.logs"),
        ("/exchange/logs/", "rabbitmq", "exchange.logs.%"),
        ("/reply-queue/r", "rabbitmq", "reply-queue.r"),
    ],
)
def test_destination_examples(destination: str, dialect: str, subject: str) -> None:
    assert stomp.destination_to_subject(destination, dialect) == subject
    assert stomp.subject_to_destination(subject, dialect) == destination
    assert str(stomp.parse_destination(destination, dialect)) == destination


@pytest.mark.parametrize(
    ("destination", "dialect"),
    [
        ("/exchange/x/y", "activemq"),
        ("/amq/queue/q", "activemq"),
        ("queue/x", "rabbitmq"),
        ("/queue/", "rabbitmq"),
        ("/exchange//k", "rabbitmq"),
        ("/queue/x", "artemis"),
    ],
)
def test_bad_destinations(destination: str, dialect: str) -> None:
    with pytest.raises(MappingError):
        stomp.destination_to_subject(destination, dialect)


def test_subject_not_a_destination() -> None:
    with pytest.raises(MappingError, match="does not name a activemq STOMP destination"):
        stomp.subject_to_destination("exchange.x.y", "activemq")


@st.composite
def destinations(draw: st.DrawFn) -> tuple[str, str]:
    dialect = draw(st.sampled_from(stomp.DIALECTS))
    kind = draw(st.sampled_from(stomp._KINDS[dialect]))
    name = draw(routing_keys)
    if kind == "exchange":
        exchange = draw(st.text(min_size=1, max_size=10).filter(lambda x: "/" not in x))
        return (f"/exchange/{exchange}" + draw(st.sampled_from(["", "/"])) + name, dialect)
    assume(name != "")
    return stomp._PREFIX[kind] + name, dialect


@given(destinations())
def test_destination_round_trip(dest: tuple[str, str]) -> None:
    destination, dialect = dest
    subject = stomp.destination_to_subject(destination, dialect)
    assert is_valid_subject(subject)
    assert stomp.subject_to_destination(subject, dialect) == destination


@given(destinations(), destinations())
def test_destination_injective(a: tuple[str, str], b: tuple[str, str]) -> None:
    assume(a[0] != b[0])
    dialect = a[1]
    try:
        sa = stomp.destination_to_subject(a[0], dialect)
        sb = stomp.destination_to_subject(b[0], dialect)
    except MappingError:
        return  # b's kind is not in a's dialect
    assert sa != sb


@pytest.mark.parametrize(
    ("destination", "name"),
    [
        ("/topic/quotes.NYSE.IBM", "quotes.NYSE.IBM"),
        ("/queue/q", "q"),
        ("/exchange/X/rk.a", "rk.a"),
        ("/amq/queue/q", "q"),
        ("/exchange/X", ""),
        ("plain", "plain"),
    ],
)
def test_destination_name(destination: str, name: str) -> None:
    assert stomp.destination_name(destination) == name
