"""Loading a config file into a checked, compiled `Config`, or one error listing every problem.

Each problem names the file, line and column, the YAML path (`routes[1].to.subject`),
what was expected and what was found; secret values are shown as `***`.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, SecretStr, ValidationError

from natsbridge.bridge import secrets
from natsbridge.bridge.config.model import (
    CONNECTION_MODELS,
    SINK_MODELS,
    SOURCE_MODELS,
    AmqpSink,
    AmqpSource,
    BridgeSettings,
    ConfigFile,
    Connection,
    Delivery,
    KafkaSink,
    KafkaSource,
    Model,
    NatsSink,
    NatsSource,
    RouteSpec,
    Sink,
    Source,
    StompSink,
    StompSource,
)
from natsbridge.bridge.config.source import (
    Document,
    Mark,
    YamlPath,
    YamlSyntaxError,
    format_path,
    read_document,
    shorten,
)
from natsbridge.bridge.errors import ConfigError, SubjectError, TemplateError
from natsbridge.mappings.subjects import validate_pattern, validate_subject
from natsbridge.mappings.templates import Template, compile_template

_AMQP_SHORT_STRING = 255  # bytes in an AMQP 0-9-1 exchange, queue or routing key
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SECRET_KEYS = frozenset({"password", "passcode", "token", "sasl_password"})
_TEMPLATE_FIELDS: dict[type[Model], tuple[str, ...]] = {
    AmqpSink: ("routing_key",),
    KafkaSink: ("topic", "key"),
    StompSink: ("destination",),
    NatsSink: ("subject",),
}


@dataclass(frozen=True, slots=True)
class Route:
    """A checked route: its spec, its typed endpoints and its compiled templates."""

    spec: RouteSpec
    source: Source
    source_kind: str
    sink: Sink
    sink_kind: str
    templates: dict[str, Template]

    @property
    def name(self) -> str:
        """The route's unique name."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, valid config file."""

    path: str
    bridge: BridgeSettings
    connections: dict[str, Connection]
    routes: list[Route]
    warnings: list[str] = field(default_factory=list)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, interpolate, validate and compile the config at `path`; raise ConfigError."""
    try:
        doc = read_document(path, environ)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from None
    except YamlSyntaxError as exc:
        where = f"{path}:{exc.mark.line}:{exc.mark.column}" if exc.mark else str(path)
        raise ConfigError([f"{where}: {exc}"]) from None
    return _Checker(doc).check()


class _Checker:
    """Validates one document, collecting every problem before raising."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems = [
            _Problem(path, text, doc.value_marks.get(path) or doc.mark(path))
            for path, text in doc.problems
        ]
        self.warnings: list[_Problem] = []
        self.kinds: dict[str, str] = {}  # connection name -> kind, even if otherwise invalid
        self.interpolated = {path for path, _ in doc.problems}
        _register_secrets(doc.data)

    def check(self) -> Config:
        data = self.doc.data
        if not isinstance(data, dict):
            self.fail((), "expected a mapping with keys version, bridge, connections, routes")
            raise self.error()
        self.unknown_keys(data, ConfigFile, ())
        if data.get("version") != 1:
            self.fail(("version",), f"expected version: 1, found {_kind_of(data.get('version'))}")
        bridge = typing.cast(
            BridgeSettings | None, self.validate(BridgeSettings, data.get("bridge"), ("bridge",))
        )
        connections = self.check_connections(data.get("connections"))
        routes = self.check_routes(data.get("routes"), connections)
        if self.problems or bridge is None:
            raise self.error()
        return Config(
            path=self.doc.path,
            bridge=bridge,
            connections=connections,
            routes=routes,
            warnings=[w.render(self.doc.path) for w in self.warnings],
        )

    # ------------------------------------------------------------ sections

    def check_connections(self, raw: Any) -> dict[str, Connection]:
        path: YamlPath = ("connections",)
        if not isinstance(raw, dict) or not raw:
            self.fail(path, f"expected a mapping of named connections, found {_kind_of(raw)}")
            return {}
        result: dict[str, Connection] = {}
        for name, body in raw.items():
            where = (*path, name)
            if not isinstance(body, dict):
                self.fail(where, f"expected a mapping with a 'kind', found {_kind_of(body)}")
                continue
            kind = body.get("kind")
            model = CONNECTION_MODELS.get(kind) if isinstance(kind, str) else None
            if model is None or not isinstance(kind, str):
                hint = _did_you_mean(str(kind), CONNECTION_MODELS)
                self.fail(
                    (*where, "kind"),
                    f"expected kind one of {', '.join(CONNECTION_MODELS)}, "
                    f"found {_kind_of(kind)}{hint}",
                )
                continue
            self.kinds[name] = kind
            connection = self.validate(model, body, where)
            if connection is not None:
                result[name] = typing.cast(Connection, connection)
        return result

    def check_routes(self, raw: Any, connections: dict[str, Connection]) -> list[Route]:
        if not isinstance(raw, list) or not raw:
            self.fail(("routes",), f"expected a list of routes, found {_kind_of(raw)}")
            return []
        routes: list[Route] = []
        seen: dict[str, int] = {}
        for index, body in enumerate(raw):
            where: YamlPath = ("routes", index)
            spec = typing.cast(RouteSpec | None, self.validate(RouteSpec, body, where))
            endpoints = self.check_endpoints(body, where, connections)
            templates = None
            if endpoints is not None and self.check_subjects(endpoints[0], endpoints[2], where):
                templates = self.compile_templates(*endpoints, where)
            name = body.get("name") if isinstance(body, dict) else None
            if isinstance(name, str) and name in seen:
                self.fail(
                    (*where, "name"),
                    f"duplicate route name '{shorten(name)}' (first used by routes[{seen[name]}])",
                )
            elif isinstance(name, str):
                seen[name] = index
            if spec is None or endpoints is None or templates is None:
                continue
            self.check_delivery(spec, endpoints[0], endpoints[2], where)
            self.check_broker_names(spec, endpoints[0], endpoints[2], where)
            routes.append(Route(spec, *endpoints, templates))
        return routes

    def check_endpoints(
        self, body: Any, where: YamlPath, connections: dict[str, Connection]
    ) -> tuple[Source, str, Sink, str] | None:
        """The typed `from` and `to` of a route, checked against their connection's kind."""
        if not isinstance(body, dict):
            return None  # validate() reported it
        checked: list[tuple[Model, str] | None] = []
        for key, models in (("from", SOURCE_MODELS), ("to", SINK_MODELS)):
            endpoint = body.get(key)
            kind = None
            if isinstance(endpoint, dict):
                kind = self.connection_kind(endpoint, (*where, key), connections)
            model = self.validate(models[kind], endpoint, (*where, key)) if kind else None
            checked.append((model, kind) if model is not None and kind else None)
        source, sink = checked
        if source is None or sink is None:
            return None
        return (
            typing.cast(Source, source[0]),
            source[1],
            typing.cast(Sink, sink[0]),
            sink[1],
        )

    def connection_kind(
        self, endpoint: dict[str, Any], where: YamlPath, connections: dict[str, Connection]
    ) -> str | None:
        name = endpoint.get("connection")
        if not isinstance(name, str):
            self.fail(where, "missing required key 'connection' (the name of a connection)")
            return None
        kind = self.kinds.get(name)
        written = self.doc.data.get("connections")
        if kind is None and not (isinstance(written, dict) and name in written):
            hint = _did_you_mean(name, self.kinds)
            defined = ", ".join(self.kinds) or "none"
            self.fail(
                (*where, "connection"),
                f"no connection named '{shorten(name)}'{hint} (defined: {defined})",
            )
        return kind

    # ------------------------------------------------------------ semantics

    def check_subjects(self, source: Source, sink: Sink, where: YamlPath) -> bool:
        """Check the NATS subject patterns a route names; False if any is invalid."""
        checks: list[tuple[str, YamlPath]] = []
        if isinstance(source, NatsSource):
            checks.append((source.subject, (*where, "from", "subject")))
        if isinstance(sink, NatsSink) and sink.jetstream and sink.jetstream.subjects:
            for i, pattern in enumerate(sink.jetstream.subjects):
                checks.append((pattern, (*where, "to", "jetstream", "subjects", i)))
        valid = True
        for pattern, path in checks:
            try:
                validate_pattern(pattern)
            except SubjectError as exc:
                self.fail(path, str(exc))
                valid = False
        return valid

    def compile_templates(
        self, source: Source, source_kind: str, sink: Sink, sink_kind: str, where: YamlPath
    ) -> dict[str, Template]:
        patterns = source_patterns(source)
        compiled: dict[str, Template] = {}
        for name in _TEMPLATE_FIELDS[type(sink)]:
            text = getattr(sink, name)
            if text is None:
                continue
            path = (*where, "to", name)
            try:
                compiled[name] = compile_template(
                    text, source_kind=source_kind, source_patterns=patterns, target_kind=sink_kind
                )
            except TemplateError as exc:
                self.fail(path, f"in template {_kind_of(text)}: {exc}", offset=exc.position)
                continue
            except SubjectError as exc:
                self.fail(path, str(exc))
                continue
            if sink_kind == "nats" and not compiled[name].placeholders:
                try:
                    validate_subject(text)
                except SubjectError as exc:
                    self.fail(path, str(exc))
        return compiled

    def check_delivery(self, spec: RouteSpec, source: Source, sink: Sink, where: YamlPath) -> None:
        core_nats_source = isinstance(source, NatsSource) and source.jetstream is None
        core_nats_sink = isinstance(sink, NatsSink) and sink.jetstream is None
        if spec.delivery is Delivery.EXACTLY_ONCE and not (
            isinstance(sink, KafkaSink) or (isinstance(sink, NatsSink) and sink.jetstream)
        ):
            self.fail(
                (*where, "delivery"),
                "exactly_once needs a JetStream sink (to.jetstream) or a Kafka sink; "
                f"found a {_endpoint_kind(sink)} sink",
            )
        if spec.delivery is Delivery.AT_LEAST_ONCE and core_nats_source:
            path = (*where, "delivery")
            self.warnings.append(
                _Problem(
                    path,
                    "at_least_once from core NATS starts at the buffer: core NATS cannot "
                    "redeliver what arrives while the bridge is down",
                    self.doc.mark(path),
                )
            )
        if spec.request_reply is not None:
            pair = (
                (core_nats_source, isinstance(sink, AmqpSink)),
                (
                    isinstance(source, AmqpSource),
                    core_nats_sink,
                ),
            )
            if not any(all(side) for side in pair):
                self.fail(
                    (*where, "request_reply"),
                    "request_reply needs a core NATS source and an amqp sink, or an amqp "
                    f"source and a core NATS sink; found {_endpoint_kind(source)} -> "
                    f"{_endpoint_kind(sink)}",
                )

    def check_broker_names(
        self, spec: RouteSpec, source: Source, sink: Sink, where: YamlPath
    ) -> None:
        """Names the brokers would refuse at run time (JetStream names are checked by type)."""
        js_source = source.jetstream if isinstance(source, NatsSource) else None
        if js_source is not None and js_source.durable is None and "." in spec.name:
            self.fail(
                (*where, "name"),
                f"the default durable 'natsbridge-{spec.name}' is not a JetStream name "
                "(no '.'): rename the route or set from.jetstream.durable",
            )
        amqp: list[tuple[str | None, YamlPath]] = []
        if isinstance(source, AmqpSource):
            amqp += [(source.queue, (*where, "from", "queue"))]
            amqp += [(source.exchange, (*where, "from", "exchange"))]
            keys = enumerate(source.binding_keys)
            amqp += [(key, (*where, "from", "binding_keys", i)) for i, key in keys]
        if isinstance(sink, AmqpSink):
            amqp += [(sink.exchange, (*where, "to", "exchange"))]
        for text, path in amqp:
            if text and len(text.encode("utf-8", errors="surrogatepass")) > _AMQP_SHORT_STRING:
                self.fail(path, f"expected at most {_AMQP_SHORT_STRING} bytes (an AMQP name)")
        topic = sink.topic if isinstance(sink, KafkaSink) and "{{" not in sink.topic else None
        if topic is not None and (not _KAFKA_TOPIC.fullmatch(topic) or topic in (".", "..")):
            self.fail(
                (*where, "to", "topic"),
                "expected a Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -, "
                f"found {_kind_of(topic)}",
            )

    # ------------------------------------------------------------ helpers

    def validate(self, model: type[Model], raw: Any, where: YamlPath) -> Model | None:
        if raw is None:
            self.fail(where, f"missing required section '{format_path(where)}'")
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            for error in errors:
                if not _explained_by_a_typo(model, error, errors):
                    self.pydantic_problem(model, where, error)
            return None

    def unknown_keys(self, raw: dict[str, Any], model: type[BaseModel], where: YamlPath) -> None:
        for key in raw:
            if key not in _field_names(model):
                self.fail((*where, key), _unknown_key(key, model))

    def pydantic_problem(self, model: type[Model], where: YamlPath, error: Any) -> None:
        kind = error["type"]
        loc = tuple(error["loc"])
        if kind not in ("extra_forbidden", "missing"):  # those name a key, maybe ''
            loc = tuple(part for part in loc if part != "")
        path = (*where, *loc)
        if path in self.interpolated:
            return  # the failed ${...} reference was reported already
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            self.fail(path, _unknown_key(str(loc[-1]), owner) if owner else "unknown key")
            return
        if kind == "missing":
            self.fail(path, f"missing required key '{loc[-1]}'")
            return
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message.replace("Input should be", "expected")
        message = message.replace("String should", "expected text to")
        found = error.get("input")
        # Validators never quote the value; it is shown here, masked if it is secret.
        if kind != "value_error" or isinstance(found, str | int | float):
            secret = path in self.doc.secret_paths or _is_secret(loc)
            message = f"{message}, found {'***' if secret else _kind_of(found)}"
        self.fail(path, message)

    def fail(self, path: YamlPath, message: str, offset: int | None = None) -> None:
        mark = self.doc.mark(path)
        start = self.doc.value_marks.get(path)
        if offset is not None and start is not None:
            mark = Mark(start.line, start.column + offset)
        self.problems.append(_Problem(path, message, mark))

    def error(self) -> ConfigError:
        ordered = sorted(
            self.problems, key=lambda p: (p.mark.line, p.mark.column) if p.mark else (0, 0)
        )
        return ConfigError([p.render(self.doc.path) for p in ordered])


@dataclass(frozen=True, slots=True)
class _Problem:
    path: YamlPath
    message: str
    mark: Mark | None

    def render(self, file: str) -> str:
        where = f"{file}:{self.mark.line}:{self.mark.column}" if self.mark else file
        return f"{where}: {shorten(format_path(self.path))}: {shorten(self.message, 500)}"


# ---------------------------------------------------------------- pure helpers


def _field_names(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model class that `loc` (a pydantic error location) points into."""
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue  # an index into a list: the element type is what follows
        fields = {info.alias or name: info for name, info in current.model_fields.items()}
        if part not in fields:
            return None
        nested = _nested_model(fields[part].annotation)
        if nested is None:
            return None
        current = nested
    return current


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class in an annotation such as `X`, `X | None` or `list[X]`, if any."""
    candidates = (annotation, *typing.get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _explained_by_a_typo(model: type[BaseModel], error: Any, errors: list[Any]) -> bool:
    """A missing key whose misspelling is reported as an unknown key beside it."""
    if error["type"] != "missing":
        return False
    parent, name = error["loc"][:-1], error["loc"][-1]
    for other in errors:
        if other["type"] == "extra_forbidden" and other["loc"][:-1] == parent:
            owner = _model_at(model, parent)
            allowed = _field_names(owner) if owner else set()
            if name in difflib.get_close_matches(str(other["loc"][-1]), list(allowed), n=1):
                return True
    return False


def _unknown_key(key: str, model: type[BaseModel]) -> str:
    allowed = _field_names(model)
    hint = _did_you_mean(key, allowed)
    return (
        f"unknown key '{shorten(key)}'{hint}"
        if hint
        else (f"unknown key '{shorten(key)}'; expected one of: {', '.join(sorted(allowed))}")
    )


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def _kind_of(value: Any) -> str:
    """A found value as errors show it: short, and with any URL password masked."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str) and "://" in value:
        value = secrets.redact_url(value)
    return shorten(repr(value), 80)


def _is_secret(loc: tuple[Any, ...]) -> bool:
    return bool(loc) and loc[-1] in _SECRET_KEYS


def _register_secrets(data: Any) -> None:
    """Register password-like values and URL passwords found anywhere in `data`."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in _SECRET_KEYS and isinstance(value, str | int):
                secrets.register(str(value))
            _register_secrets(value)
    elif isinstance(data, list):
        for item in data:
            _register_secrets(item)
    elif isinstance(data, str) and "://" in data:
        password = secrets.url_password(data)
        if password:
            secrets.register(password)
            secrets.register(unquote(password))  # what the client library logs


def source_patterns(source: Source) -> tuple[str, ...]:
    """The addresses a source takes, in its own syntax (empty: it takes everything)."""
    if isinstance(source, NatsSource):
        return (source.subject,)
    if isinstance(source, AmqpSource) and source.exchange is not None:
        return tuple(source.binding_keys)
    if isinstance(source, StompSource):
        return (source.destination,)
    if isinstance(source, KafkaSource) and source.topics:
        return tuple(source.topics)
    return ()


def _endpoint_kind(endpoint: Source | Sink) -> str:
    if isinstance(endpoint, NatsSource | NatsSink):
        return "JetStream" if endpoint.jetstream else "core NATS"
    return type(endpoint).__name__.removesuffix("Source").removesuffix("Sink").lower()


def secret_value(value: SecretStr | None) -> str | None:
    """The plain text of an optional secret, for handing to a client library."""
    return value.get_secret_value() if value is not None else None
