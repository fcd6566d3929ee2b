"""Template rendering against hand-written expectations, and every compile/render error."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import MappingError, SubjectError, TemplateError
from natsbridge.connectors.amqp.kind import AmqpOrigin
from natsbridge.connectors.kafka.kind import KafkaOrigin
from natsbridge.connectors.nats.kind import NatsOrigin
from natsbridge.connectors.stomp.kind import StompOrigin
from natsbridge.mappings.subjects import match
from natsbridge.mappings.templates import compile_template, match_source
from natsbridge.mappings.transforms import fnv1a_32, partition


def nats(subject: str, **headers: str) -> Envelope:
    return Envelope(
        subject,
        b"",
        {k.replace("_", "-"): [v] for k, v in headers.items()},
        origin=NatsOrigin("nats", "nats", subject=subject),
    )


def amqp(routing_key: str, exchange: str = "orders", queue: str | None = "q1") -> Envelope:
    origin = AmqpOrigin("rabbit", "amqp", exchange=exchange, routing_key=routing_key, queue=queue)
    return Envelope(routing_key, b"", origin=origin)


def kafka(topic: str, partition: int | None = 3, key: bytes | None = b"k1") -> Envelope:
    origin = KafkaOrigin("kafka", "kafka", topic=topic, partition=partition, offset=7)
    return Envelope(topic, b"", key=key, origin=origin)


def stomp(destination: str) -> Envelope:
    return Envelope(destination, b"", origin=StompOrigin("amq", "stomp", destination=destination))


@dataclass
class Case:
    text: str
    source: str
    env: Envelope
    expected: str
    patterns: list[str] = field(default_factory=list)
    target: str = "nats"


CASES = {
    # Address placeholders, one per source kind.
    "subject": Case("copy.{{subject}}", "nats", nats("a.b"), "copy.a.b"),
    "routing_key": Case(
        "legacy.orders.{{routing_key}}",
        "amqp",
        amqp("eu.created"),
        "legacy.orders.eu.created",
        ["#"],
    ),
    "routing_key escaped": Case("x.{{routing_key}}", "amqp", amqp("a b..*"), "x.a%20b.%.%2A"),
    "routing_key to amqp": Case("rk-{{routing_key}}", "amqp", amqp("a b"), "rk-a b", target="amqp"),
    "exchange": Case("{{exchange}}.{{queue}}", "amqp", amqp("k"), "orders.q1"),
    "default exchange": Case("ex.{{exchange}}", "amqp", amqp("k", exchange=""), "ex.%"),
    "topic+partition": Case(
        "kafka.{{topic}}.{{partition}}", "kafka", kafka("clicks"), "kafka.clicks.3", ["clicks"]
    ),
    "key": Case("k.{{key}}", "kafka", kafka("t", key=b"dev 42"), "k.dev%2042"),
    "binary key": Case("k.{{key}}", "kafka", kafka("t", key=b"\xff."), "k.%FF.%"),
    "key to kafka": Case("{{key}}", "kafka", kafka("t", key=b"dev42"), "dev42", target="kafka"),
    "destination": Case(
        "{{destination}}",
        "stomp",
        stomp("/topic/quotes.NYSE.IBM"),
        "quotes.NYSE.IBM",
        ["/topic/quotes.>"],
    ),
    "rabbit destination": Case("{{destination}}", "stomp", stomp("/exchange/ex/a.b"), "a.b"),
    "amq queue": Case("d.{{destination}}", "stomp", stomp("/amq/queue/q 1"), "d.q%201"),
    # header(NAME), spellings.
    "header": Case("t.{{header(X-Tenant)}}", "nats", nats("a", X_Tenant="acme.eu"), "t.acme.eu"),
    "header quoted": Case(
        't.{{ header("X-Tenant") }}', "nats", nats("a", X_Tenant="a b"), "t.a%20b"
    ),
    "header to kafka": Case(
        "{{header(X-Tenant)}}", "nats", nats("a", X_Tenant="a b"), "a b", target="kafka"
    ),
    # Wildcards from each pattern kind.
    "wildcard": Case(
        "{{wildcard(1)}}", "nats", nats("shipments.eu"), "eu", ["shipments.*"], "amqp"
    ),
    "wildcard 2": Case(
        "{{wildcard(2)}}.{{wildcard(1)}}",
        "nats",
        nats("foo.A.bar.B.baz"),
        "B.A",
        ["foo.*.bar.*.baz"],
    ),
    "wildcard spaces+case": Case("{{ WildCard( 1 ) }}", "nats", nats("a.x"), "x", ["a.*"]),
    "wildcard with >": Case("p.{{wildcard(1)}}", "nats", nats("a.x.y.z"), "p.x", ["a.*.>"]),
    "legacy $1": Case("req.$2.$1", "nats", nats("foo.A.bar.B.baz"), "req.B.A", ["foo.*.bar.*.baz"]),
    "legacy $1 not a token": Case("x$1", "nats", nats("a.b"), "x$1", ["a.*"]),
    "second pattern": Case("{{wildcard(1)}}", "nats", nats("b.q"), "q", ["a.*", "b.*"], "kafka"),
    "amqp wildcard": Case(
        "x.{{wildcard(1)}}", "amqp", amqp("orders.e u.new"), "x.e%20u", ["orders.*.#"]
    ),
    "amqp wildcard empty word": Case(
        "x.{{wildcard(1)}}", "amqp", amqp("orders."), "x.%", ["orders.*"]
    ),
    "stomp wildcard": Case(
        "{{wildcard(1)}}", "stomp", stomp("/topic/quotes.NYSE.IBM"), "NYSE", ["/topic/quotes.*.>"]
    ),
    "stomp wildcard #": Case(
        "{{wildcard(1)}}", "stomp", stomp("/topic/q.a.b.c"), "c", ["/topic/q.#.*"]
    ),
    "stomp to stomp": Case(
        "/queue/alerts.{{wildcard(1)}}",
        "nats",
        nats("alerts.disk"),
        "/queue/alerts.disk",
        ["alerts.*"],
        "stomp",
    ),
    # nats-server transform functions (vectors from nats-server's tests).
    "partition whole": Case("bar.{{partition(10)}}", "nats", nats("foo.bar"), "bar.6", ["*.*"]),
    "partition n=0": Case("bar.{{partition(0)}}", "nats", nats("baz"), "bar.0", ["*"]),
    "partition tokens": Case("p.{{partition(10,1,2)}}", "nats", nats("fo.o"), "p.3", ["*.*"]),
    "splitFromLeft": Case("{{splitfromleft(1,3)}}", "nats", nats("12345"), "123.45", ["*"]),
    "splitFromRight": Case("{{SplitFromRight(1,3)}}", "nats", nats("12345"), "12.345", ["*"]),
    "sliceFromLeft": Case(
        "{{SliceFromLeft(1,3)}}", "nats", nats("1234567890"), "123.456.789.0", ["*"]
    ),
    "sliceFromRight": Case(
        "{{SliceFromRight(1,3)}}", "nats", nats("1234567890"), "1.234.567.890", ["*"]
    ),
    "split": Case("{{split(1,-)}}", "nats", nats("-abc-def--ghi-"), "abc.def.ghi", ["*"]),
    "split combo": Case(
        "{{split(2,-)}}.{{splitfromleft(1,2)}}",
        "nats",
        nats("foo.-abc-def--ghij-"),
        "abc.def.ghij.fo.o",
        ["*.*"],
    ),
    "left": Case("{{left(1,3)}}", "nats", nats("1234"), "123", ["*"]),
    "right": Case("{{right(1,6)}}", "nats", nats("1234"), "1234", ["*"]),
    "split amqp escaped": Case("{{split(1,-)}}", "amqp", amqp("a b-c"), "a%20b.c", ["*"]),
    "no placeholder": Case(
        "pricing_rpc", "nats", nats("pricing.quote"), "pricing_rpc", ["pricing.quote"], "amqp"
    ),
    "braces literal to amqp": Case("a{b}", "nats", nats("x"), "a{b}", target="amqp"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_render(case: Case) -> None:
    template = compile_template(
        case.text,
        source_kind=case.source,
        source_patterns=case.patterns,
        target_kind=case.target,
    )
    assert template.render(case.env) == case.expected
    assert template.text == case.text


def test_placeholders_and_literal() -> None:
    t = compile_template(
        "{{topic}}.{{partition}}.{{header(A)}}.{{partition(3)}}",
        source_kind="kafka",
        target_kind="nats",
    )
    assert t.placeholders == ("topic", "partition", "header")
    assert not t.is_literal
    assert compile_template("a.b", source_kind="nats", target_kind="nats").is_literal


def test_origin_falls_back_to_subject() -> None:
    t = compile_template("x.{{routing_key}}", source_kind="amqp", target_kind="nats")
    assert t.render(Envelope("eu.new", b"")) == "x.eu.new"


def test_fnv_vectors() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    # nats-server's subject_transform_test.go: partition(10) of these subjects.
    for subject, bucket in [
        ("foo", "3"),
        ("foo.bar", "6"),
        ("baz", "0"),
        ("qux", "9"),
        ("foo.baz", "4"),
    ]:
        assert partition(subject, 10) == bucket
    assert partition("test.subject", 5) == "0"


COMPILE_ERRORS = [
    # (text, source, patterns, target, position, message fragment)
    ("a.{{wildcrd(1)}}", "nats", ["a.*"], "nats", 2, "did you mean {{wildcard(i)}}"),
    ("{{subjct}}", "nats", [], "nats", 0, "did you mean {{subject}}"),
    ("x.{{partition}}", "nats", [], "nats", 2, "{{partition}} is only available from a kafka"),
    ("{{routing_key}}", "kafka", [], "nats", 0, "only available from a amqp source"),
    ("{{destination}}", "nats", [], "nats", 0, "only available from a stomp source"),
    ("{{key}}", "amqp", [], "nats", 0, "only available from a kafka source"),
    ("{{subject}}", "stomp", [], "nats", 0, "only available from a nats source"),
    ("a.{{wildcard(3)}}", "nats", ["a.*.*"], "nats", 13, "wildcard 3 is out of range"),
    ("a.{{wildcard(2)}}", "amqp", ["a.*.*", "b.*"], "nats", 13, "'b.*' has 1 '*'"),
    ("{{wildcard(1)}}", "nats", ["pricing.quote"], "nats", 11, "has no '*' wildcard"),
    ("{{wildcard(1)}}", "nats", [], "nats", 11, "no source pattern"),
    ("{{wildcard(1)}}", "kafka", ["clicks"], "nats", 11, "has no '*' wildcard"),
    ("{{wildcard(0)}}", "nats", ["a.*"], "nats", 11, "start at 1"),
    ("{{wildcard(x)}}", "nats", ["a.*"], "nats", 11, "'x' is not an integer"),
    ("{{wildcard()}}", "nats", ["a.*"], "nats", 0, "not enough arguments"),
    ("{{wildcard(1,2)}}", "nats", ["a.*"], "nats", 0, "too many arguments"),
    ("{{wildcard}}", "nats", ["a.*"], "nats", 0, "needs arguments: {{wildcard(i)}}"),
    ("{{subject(1)}}", "nats", [], "nats", 0, "takes no arguments"),
    ("{{partition(-1)}}", "nats", [], "nats", 12, "cannot be negative"),
    ("{{partition(99999999999)}}", "nats", [], "nats", 12, "out of range"),
    ("{{partition()}}", "nats", ["*"], "nats", 0, "not enough arguments"),
    ("{{split(1)}}", "nats", ["*"], "nats", 0, "not enough arguments"),
    ("{{split(1, .)}}", "nats", ["*"], "nats", 11, "separator"),
    ("{{splitFromLeft(1)}}", "nats", ["*"], "nats", 0, "not enough arguments"),
    ("{{sliceFromRight(1,2,3)}}", "nats", ["*"], "nats", 0, "too many arguments"),
    ("{{left(1,z)}}", "nats", ["*"], "nats", 9, "'z' is not an integer"),
    ("{{random(3)}}", "nats", ["*"], "nats", 0, "not supported"),
    ("{{header(X:Y)}}", "nats", [], "nats", 9, "header name"),
    ("{{header()}}", "nats", [], "nats", 0, "not enough arguments"),
    ("{{ wildcard5) }}", "nats", ["*"], "nats", 0, "malformed placeholder"),
    ("x}}", "nats", [], "nats", 1, "'}}' without a matching '{{'"),
    ("a.{{subject", "nats", [], "nats", 2, "never closed"),
    ("{{a{{b}}", "nats", [], "nats", 3, "inside a placeholder"),
    ("a..{{subject}}", "nats", [], "nats", 2, "empty token at position 2"),
    ("{{subject}}.*", "nats", [], "nats", 12, "cannot contain wildcards"),
    ("a b.{{subject}}", "nats", [], "nats", 1, "whitespace"),
    ("{{subject}}", "nats", ["a..b"], "nats", None, "source pattern 'a..b' is invalid"),
    ("{{subject}}", "carrier-pigeon", [], "nats", None, "unknown source kind 'carrier-pigeon'"),
    ("$0", "nats", ["a.*"], "nats", 0, "start at 1"),
]


@pytest.mark.parametrize(
    ("text", "source", "patterns", "target", "position", "fragment"),
    COMPILE_ERRORS,
    ids=[f"{c[0]}-{c[1]}" for c in COMPILE_ERRORS],
)
def test_compile_errors(
    text: str,
    source: str,
    patterns: list[str],
    target: str,
    position: int | None,
    fragment: str,
) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(text, source_kind=source, source_patterns=patterns, target_kind=target)
    assert fragment in str(info.value)
    assert info.value.position == position


RENDER_ERRORS = [
    # (text, source, patterns, target, envelope, error type, message fragment)
    (
        "{{wildcard(1)}}",
        "nats",
        ["shipments.*"],
        "amqp",
        nats("other.eu"),
        TemplateError,
        "subject 'other.eu' does not match 'shipments.*'",
    ),
    (
        "{{wildcard(1)}}",
        "amqp",
        ["a.*", "b.*"],
        "nats",
        amqp("c.d"),
        TemplateError,
        "routing key 'c.d' does not match ['a.*', 'b.*']",
    ),
    (
        "{{wildcard(1)}}",
        "stomp",
        ["/topic/a.*"],
        "nats",
        stomp("/queue/a.b"),
        TemplateError,
        "destination '/queue/a.b' does not match",
    ),
    (
        "x.{{header(X-Id)}}",
        "nats",
        [],
        "nats",
        nats("a"),
        TemplateError,
        "the message has no header 'X-Id'",
    ),
    ("x.{{key}}", "kafka", [], "nats", kafka("t", key=None), TemplateError, "no Kafka key"),
    ("{{key}}", "kafka", [], "amqp", kafka("t", key=b"\xff"), TemplateError, "not UTF-8"),
    (
        "x.{{partition}}",
        "kafka",
        [],
        "nats",
        kafka("t", partition=None),
        TemplateError,
        "origin has no partition",
    ),
    (
        "x.{{queue}}",
        "amqp",
        [],
        "nats",
        amqp("k", queue=None),
        TemplateError,
        "origin has no queue",
    ),
    ("{{split(1,-)}}", "nats", ["*"], "nats", nats("--"), SubjectError, "rendered a bad subject"),
    (
        "x.{{wildcard(1)}}",
        "nats",
        ["*"],
        "nats",
        nats("a" * 4096),
        SubjectError,
        "over the 4096-byte limit",
    ),
]


@pytest.mark.parametrize(
    ("text", "source", "patterns", "target", "env", "error", "fragment"),
    RENDER_ERRORS,
    ids=[f"{c[0]}-{c[-1][:20]}" for c in RENDER_ERRORS],
)
def test_render_errors(
    text: str,
    source: str,
    patterns: list[str],
    target: str,
    env: Envelope,
    error: type[MappingError],
    fragment: str,
) -> None:
    template = compile_template(
        text, source_kind=source, source_patterns=patterns, target_kind=target
    )
    with pytest.raises(error) as info:
        template.render(env)
    assert isinstance(info.value, MappingError)
    assert fragment in str(info.value)


def test_match_source() -> None:
    assert match_source("nats", ["shipments.*"], "shipments.eu") == ("eu",)
    assert match_source("nats", ["shipments.*"], "other.eu") is None
    assert match_source("nats", ["a.>"], "a.b.c") == ()
    assert match_source("amqp", ["#"], "") == ()
    assert match_source("amqp", ["a.#.*"], "a.x") == ("x",)
    assert match_source("kafka", ["clicks"], "clicks") == ()
    assert match_source("kafka", ["clicks"], "views") is None
    assert match_source("stomp", ["/topic/quotes.>"], "/topic/quotes.NYSE.IBM") == ()
    assert match_source("stomp", ["/topic/quotes.>"], "/queue/quotes.NYSE") is None
    assert match_source("nats", [], "anything") == ()


@given(
    st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4).flatmap(
        lambda toks: st.sampled_from([".".join(toks), ".".join([*toks, ">"])])
    ),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6).map(".".join),
)
def test_nats_source_matcher_agrees_with_match(pattern: str, subject: str) -> None:
    expected = match(pattern, subject)
    if expected is not None and pattern.endswith(">"):
        expected = expected[:-1]
    assert match_source("nats", [pattern], subject) == expected
