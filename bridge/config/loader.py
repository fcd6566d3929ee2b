"""Loading a config file into a checked, compiled `Config`, or one error listing every problem.

Each problem names the file, line and column, the YAML path (`routes[1].to.subject`),
what was expected and what was found; secret values are shown as `***`.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pydantic import BaseModel, SecretStr, ValidationError

from natsbridge.bridge import secrets
from natsbridge.bridge.config.buffers import check_bridge_buffer, check_route_buffer
from natsbridge.bridge.config.direct import alternatives, check_direct
from natsbridge.bridge.config.model import (
    BridgeSettings,
    Buffer,
    ConfigFile,
    Delivery,
    Endpoint,
    Model,
    RouteSpec,
    effective_buffer,
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
from natsbridge.bridge.registry import available, did_you_mean, load_connector
from natsbridge.mappings.subjects import validate_subject
from natsbridge.mappings.templates import Template, compile_template

if TYPE_CHECKING:  # bridge.kind imports the config models; bridge.migrate this package
    from natsbridge.bridge.kind import ConnectorKind, Feature, Finding
    from natsbridge.bridge.migrate.model import Migration, Phase

_SECRET_KEYS = frozenset({"password", "passcode", "token", "sasl_password"})


@dataclass(frozen=True, slots=True)
class Route:
    """A checked route: its spec, its typed endpoints and its compiled templates."""

    spec: RouteSpec
    source: Endpoint
    source_kind: str
    sink: Endpoint
    sink_kind: str
    templates: dict[str, Template]
    buffer: Buffer  # its own `buffer` over bridge.buffer (effective_buffer)
    dead_letters: Route | None = None  # this route with `dead_letters:` as its sink

    @property
    def name(self) -> str:
        """The route's unique name."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, valid config file."""

    path: str
    bridge: BridgeSettings
    connections: dict[str, Model]
    routes: list[Route]
    warnings: list[str] = field(default_factory=list)
    migrations: list[Migration] = field(default_factory=list)


def load_config(
    path: str | Path,
    environ: dict[str, str] | None = None,
    phases: Mapping[str, Phase] | None = None,
    routes: list[dict[str, Any]] | None = None,
) -> Config:
    """Read, interpolate, validate and compile the config at `path`; raise ConfigError.

    Migrations run their live phase (bridge.migrate.state), or the one `phases` names.
    `routes` replaces the file's routes and migrations (`natsbridge drain` runs one route
    over the file's connections).
    """
    try:
        doc = read_document(path, environ)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from None
    except YamlSyntaxError as exc:
        where = f"{path}:{exc.mark.line}:{exc.mark.column}" if exc.mark else str(path)
        raise ConfigError([f"{where}: {exc}"]) from None
    if routes is not None and isinstance(doc.data, dict):
        kept = {key: value for key, value in doc.data.items() if key != "migrations"}
        doc.data = {**kept, "routes": routes}
    return _Checker(doc, phases or {}).check()


class _Checker:
    """Validates one document, collecting every problem before raising."""

    def __init__(self, doc: Document, phases: Mapping[str, Phase]) -> None:
        self.doc = doc
        self.phases = phases
        self.problems = [
            _Problem(path, text, doc.value_marks.get(path) or doc.mark(path))
            for path, text in doc.problems
        ]
        self.warnings: list[_Problem] = []
        self.kinds: dict[str, str] = {}  # connection name -> kind, even if otherwise invalid
        self.installed = available()
        self.interpolated = {path for path, _ in doc.problems}
        # Where a problem of a route derived from a migration is in the file (see fail()).
        self.translate: Callable[[YamlPath], YamlPath] = same_path
        self.default_buffer = Buffer()  # bridge.buffer once it is checked
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
        if bridge is not None:
            self.default_buffer = bridge.buffer
            check_bridge_buffer(self, bridge.buffer)
        written = data.get("migrations")
        routes = self.check_routes(data.get("routes"), connections, optional=bool(written))
        migrations: list[Migration] = []
        if isinstance(written, list):
            from natsbridge.bridge.config.migrations import check_migrations

            migrations = check_migrations(self, written, bridge, connections, routes)
        elif written is not None:
            self.fail(("migrations",), f"expected a list of migrations, found {_kind_of(written)}")
        if self.problems or bridge is None:
            raise self.error()
        return Config(
            path=self.doc.path,
            bridge=bridge,
            connections=connections,
            routes=routes,
            warnings=[w.render(self.doc.path) for w in self.warnings],
            migrations=migrations,
        )

    # ------------------------------------------------------------ sections

    def check_connections(self, raw: Any) -> dict[str, Model]:
        path: YamlPath = ("connections",)
        if not isinstance(raw, dict) or not raw:
            self.fail(path, f"expected a mapping of named connections, found {_kind_of(raw)}")
            return {}
        result: dict[str, Model] = {}
        for name, body in raw.items():
            where = (*path, name)
            if not isinstance(body, dict):
                self.fail(where, f"expected a mapping with a 'kind', found {_kind_of(body)}")
                continue
            kind = body.get("kind")
            if not isinstance(kind, str) or kind not in self.installed:
                self.fail(
                    (*where, "kind"),
                    f"expected kind one of {', '.join(self.installed)}, "
                    f"found {_kind_of(kind)}{did_you_mean(str(kind), self.installed)}",
                )
                continue
            try:
                model = load_connector(kind).connection_model
            except ConfigError as exc:  # an installed plugin that cannot be imported
                self.fail((*where, "kind"), "; ".join(exc.problems))
                continue
            self.kinds[name] = kind
            connection = self.validate(model, body, where)
            if connection is not None:
                result[name] = connection
        return result

    def check_routes(
        self, raw: Any, connections: dict[str, Model], optional: bool = False
    ) -> list[Route]:
        if optional and raw in (None, []):
            return []
        if not isinstance(raw, list) or not raw:
            expected = "a list of routes (or a `migrations` section)"
            self.fail(("routes",), f"expected {expected}, found {_kind_of(raw)}")
            return []
        routes: list[Route] = []
        seen: dict[str, int] = {}
        for index, body in enumerate(raw):
            where: YamlPath = ("routes", index)
            route = self.check_route(body, where, connections)
            name = body.get("name") if isinstance(body, dict) else None
            if isinstance(name, str) and name in seen:
                self.fail(
                    (*where, "name"),
                    f"duplicate route name '{shorten(name)}' (first used by routes[{seen[name]}])",
                )
            elif isinstance(name, str):
                seen[name] = index
            if route is not None:
                routes.append(route)
        return routes

    def check_route(
        self, body: Any, where: YamlPath, connections: dict[str, Model]
    ) -> Route | None:
        """The route written (or derived) at `where`, or None after reporting its problems."""
        spec = typing.cast(RouteSpec | None, self.validate(RouteSpec, body, where))
        endpoints = self.check_endpoints(body, where, connections)
        templates = None
        if endpoints is not None and self.check_kinds(spec, *endpoints, where):
            templates = self.compile_templates(*endpoints, where)
        if spec is None or endpoints is None or templates is None:
            return None
        self.check_delivery(spec, *endpoints, where)
        buffer = effective_buffer(self.default_buffer, spec.buffer)
        check_route_buffer(self, spec, buffer, where)
        check_direct(self, spec, buffer, endpoints, where)
        source, source_kind, sink, sink_kind = endpoints
        route = Route(spec, source, source_kind.name, sink, sink_kind.name, templates, buffer)
        if not isinstance(body, dict) or body.get("dead_letters") is None:
            return route
        dead_letters = self.check_dead_letters(route, source_kind, body, where, connections)
        return None if dead_letters is None else replace(route, dead_letters=dead_letters)

    def check_dead_letters(
        self,
        route: Route,
        source_kind: ConnectorKind,
        body: dict[str, Any],
        where: YamlPath,
        connections: dict[str, Model],
    ) -> Route | None:
        """`dead_letters:` checked as a `to` of its connection's kind: `route` writing there."""
        path: YamlPath = (*where, "dead_letters")
        if route.spec.delivery is Delivery.AT_MOST_ONCE or route.spec.request_reply:
            self.fail(
                path,
                "only a buffered route has dead letters: at_most_once and "
                "request/reply routes drop what fails (counted as dropped)",
            )
            return None
        written = body["dead_letters"]  # a mapping: RouteSpec checked that
        name = self.connection_kind(written, path, connections)
        checked = self.check_endpoint(name, written, path) if name else None
        if checked is None:
            return None
        sink, sink_kind = checked
        self.report(sink_kind.check_sink(sink, route.spec), path)
        templates = self.compile_templates(route.source, source_kind, sink, sink_kind, path, "")
        # A dead letter may be what broke the route's limits; it is sent once, confirmed.
        spec = route.spec.model_copy(
            update={"delivery": Delivery.AT_LEAST_ONCE, "max_payload": None}
        )
        return Route(
            spec, route.source, route.source_kind, sink, sink_kind.name, templates, route.buffer
        )

    def check_endpoints(
        self, body: Any, where: YamlPath, connections: dict[str, Model]
    ) -> tuple[Endpoint, ConnectorKind, Endpoint, ConnectorKind] | None:
        """The typed `from` and `to` of a route, checked against their connection's kind."""
        if not isinstance(body, dict):
            return None  # validate() reported it
        checked: list[tuple[Endpoint, ConnectorKind] | None] = []
        for key in ("from", "to"):
            endpoint = body.get(key)
            name = None
            if isinstance(endpoint, dict):
                name = self.connection_kind(endpoint, (*where, key), connections)
            checked.append(self.check_endpoint(name, endpoint, (*where, key)) if name else None)
        source, sink = checked
        if source is None or sink is None:
            return None
        return (*source, *sink)

    def check_endpoint(
        self, name: str, endpoint: Any, where: YamlPath
    ) -> tuple[Endpoint, ConnectorKind] | None:
        """`endpoint` validated as the `from` or `to` (the last part of `where`) of kind `name`."""
        kind = load_connector(name)
        source = where[-1] == "from"
        model = kind.source_model if source else kind.sink_model
        if model is None:
            role = "source" if source else "sink"
            self.fail((*where, "connection"), f"a {name} connection cannot be a {role}")
            return None
        valid = self.validate(model, endpoint, where)
        return None if valid is None else (typing.cast(Endpoint, valid), kind)

    def connection_kind(
        self, endpoint: dict[str, Any], where: YamlPath, connections: dict[str, Model]
    ) -> str | None:
        name = endpoint.get("connection")
        if not isinstance(name, str):
            self.fail(where, "missing required key 'connection' (the name of a connection)")
            return None
        kind = self.kinds.get(name)
        written = self.doc.data.get("connections")
        if kind is None and not (isinstance(written, dict) and name in written):
            hint = did_you_mean(name, self.kinds)
            defined = ", ".join(self.kinds) or "none"
            self.fail(
                (*where, "connection"),
                f"no connection named '{shorten(name)}'{hint} (defined: {defined})",
            )
        return kind

    # ------------------------------------------------------------ semantics

    def check_kinds(
        self,
        spec: RouteSpec | None,
        source: Endpoint,
        source_kind: ConnectorKind,
        sink: Endpoint,
        sink_kind: ConnectorKind,
        where: YamlPath,
    ) -> bool:
        """Report what each endpoint's kind finds wrong; False if the source has a problem.

        A source's problem (an invalid pattern) would make its templates fail to compile
        for the same reason, so they are not compiled.
        """
        source_ok = self.report(source_kind.check_source(source, spec), where)
        self.report(sink_kind.check_sink(sink, spec), where)
        return source_ok

    def report(self, findings: typing.Iterable[Finding], where: YamlPath) -> bool:
        """Record `findings` about the route at `where`; False if one is a problem."""
        ok = True
        for finding in findings:
            path = self.translate((*where, *finding.path))
            if finding.warning:
                self.warnings.append(_Problem(path, finding.message, self.doc.mark(path)))
            else:
                self.fail(path, finding.message)
                ok = False
        return ok

    def compile_templates(
        self,
        source: Endpoint,
        source_kind: ConnectorKind,
        sink: Endpoint,
        sink_kind: ConnectorKind,
        where: YamlPath,
        key: str = "to",
    ) -> dict[str, Template]:
        """The sink's templates at `where`/`key` (`key` "" for `dead_letters`), compiled."""
        patterns = source_kind.source_patterns(source)
        compiled: dict[str, Template] = {}
        for name in sink_kind.sink_templates:
            text = getattr(sink, name)
            if text is None:
                continue
            path = (*where, key, name) if key else (*where, name)
            try:
                compiled[name] = compile_template(
                    text,
                    source_kind=source_kind.name,
                    source_patterns=patterns,
                    target_kind=sink_kind.name,
                )
            except TemplateError as exc:
                self.fail(path, f"in template {_kind_of(text)}: {exc}", offset=exc.position)
                continue
            except SubjectError as exc:
                self.fail(path, str(exc))
                continue
            if sink_kind.subject_addresses and not compiled[name].placeholders:
                try:
                    validate_subject(text)
                except SubjectError as exc:
                    self.fail(path, str(exc))
        return compiled

    def check_delivery(
        self,
        spec: RouteSpec,
        source: Endpoint,
        source_kind: ConnectorKind,
        sink: Endpoint,
        sink_kind: ConnectorKind,
        where: YamlPath,
    ) -> None:
        """The route's guarantee and request_reply, as far as its kinds support them."""
        once: Feature = "exactly_once"
        if spec.delivery is Delivery.EXACTLY_ONCE and not sink_kind.supports(once, "to", sink):
            sinks = alternatives(lambda kind: kind.exactly_once)
            self.fail(
                (*where, "delivery"),
                f"exactly_once needs {sinks}; found a {sink_kind.label(sink)} sink",
            )
        # Request/reply bridges two kinds (a NATS request answered by an AMQP RPC server):
        # both ends must carry replies, and be of different kinds.
        both = source_kind.supports("request_reply", "from", source) and sink_kind.supports(
            "request_reply", "to", sink
        )
        if spec.request_reply is not None and not (both and source_kind is not sink_kind):
            sources = alternatives(lambda kind: kind.request_reply[0])
            sinks = alternatives(lambda kind: kind.request_reply[1])
            self.fail(
                (*where, "request_reply"),
                f"request_reply needs {sources}, and {sinks} of another kind; found "
                f"{source_kind.label(source)} -> {sink_kind.label(sink)}",
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
        path = self.translate(path)
        mark = self.doc.mark(path)
        start = self.doc.value_marks.get(path)
        if offset is not None and start is not None:
            mark = Mark(start.line, start.column + offset)
        self.problems.append(_Problem(path, message, mark))

    def error(self) -> ConfigError:
        ordered = sorted(
            self.problems, key=lambda p: (p.mark.line, p.mark.column) if p.mark else (0, 0)
        )
        # Both routes a migration derives may find the same problem in it: shown once.
        return ConfigError(list(dict.fromkeys(p.render(self.doc.path) for p in ordered)))


@dataclass(frozen=True, slots=True)
class _Problem:
    path: YamlPath
    message: str
    mark: Mark | None

    def render(self, file: str) -> str:
        where = f"{file}:{self.mark.line}:{self.mark.column}" if self.mark else file
        return f"{where}: {shorten(format_path(self.path))}: {shorten(self.message, 500)}"


# ---------------------------------------------------------------- pure helpers


def same_path(path: YamlPath) -> YamlPath:
    """The identity: a problem's path as it is written in the file."""
    return path


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
    hint = did_you_mean(key, allowed)
    return (
        f"unknown key '{shorten(key)}'{hint}"
        if hint
        else (f"unknown key '{shorten(key)}'; expected one of: {', '.join(sorted(allowed))}")
    )


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


def secret_value(value: SecretStr | None) -> str | None:
    """The plain text of an optional secret, for handing to a client library."""
    return value.get_secret_value() if value is not None else None
