"""The connector SDK: everything a connector package imports from natsbridge, in one place.

A connector subclasses `ConnectorKind` (its config models, placeholders, address rules,
checks and runtime factories; see natsbridge.bridge.kind for the whole contract), defines
its `Origin` NamedTuple, implements `Source` and/or `Sink` (natsbridge.bridge.connector),
and registers an instance under the ``natsbridge.connectors`` entry-point group::

    [project.entry-points."natsbridge.connectors"]
    redis = "natsbridge_redis:connector"

Import from here rather than from the modules behind it: these names are the stable API.
"""

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import (
    BridgeSettings,
    Delivery,
    Endpoint,
    JsName,
    Model,
    Name,
    RouteSpec,
    Template,
    Tls,
    url_with_scheme,
)
from natsbridge.bridge.config.units import Bytes, Seconds
from natsbridge.bridge.connector import (
    Ack,
    AckOnce,
    Incoming,
    Requester,
    Responder,
    Sink,
    Source,
    send_one,
    unreadable,
)
from natsbridge.bridge.declare import Declaration, Observed, log_created
from natsbridge.bridge.drivers import DriverVersionError, require
from natsbridge.bridge.envelope import Envelope, Headers, Origin
from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConfigError,
    ConnectionLost,
    HeaderError,
    MappingError,
    MessageRejected,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
    SubjectError,
    TemplateError,
)
from natsbridge.bridge.kind import (
    ConnectorKind,
    Feature,
    Finding,
    Placeholder,
    Side,
    first_match,
    origin_value,
    remembered,
)
from natsbridge.bridge.threads import (
    Completions,
    Confirms,
    DriverThread,
    Inbox,
    LoopPoster,
    failed,
    receive,
    settle,
    spawn,
    take_up_to,
)
from natsbridge.bridge.tls import tls_context
from natsbridge.mappings.escaping import escape_token, escape_words, unescape_words
from natsbridge.mappings.templates import Captures, Matcher, subject_matcher

__all__ = [
    "Ack",
    "AckOnce",
    "BridgeError",
    "BridgeSettings",
    "BridgeTimeout",
    "Bytes",
    "Captures",
    "Completions",
    "ConfigError",
    "Confirms",
    "ConnectionLost",
    "ConnectorKind",
    "Declaration",
    "Delivery",
    "DriverThread",
    "DriverVersionError",
    "Endpoint",
    "Envelope",
    "Feature",
    "Finding",
    "HeaderError",
    "Headers",
    "Inbox",
    "Incoming",
    "JsName",
    "LoopPoster",
    "MappingError",
    "Matcher",
    "MessageRejected",
    "Model",
    "Name",
    "Observed",
    "Origin",
    "PayloadTooLarge",
    "PermanentError",
    "Placeholder",
    "Requester",
    "Responder",
    "RetryableError",
    "Route",
    "RouteSpec",
    "Seconds",
    "Side",
    "Sink",
    "Source",
    "SubjectError",
    "Template",
    "TemplateError",
    "Tls",
    "escape_token",
    "escape_words",
    "failed",
    "first_match",
    "log_created",
    "origin_value",
    "receive",
    "remembered",
    "require",
    "send_one",
    "settle",
    "spawn",
    "subject_matcher",
    "take_up_to",
    "tls_context",
    "unescape_words",
    "unreadable",
    "url_with_scheme",
]
