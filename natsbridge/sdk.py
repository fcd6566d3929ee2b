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
    Confirms,
    Incoming,
    Requester,
    Responder,
    Sink,
    Source,
    failed,
    send_one,
    take_up_to,
    unreadable,
)
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
    origin_value,
)
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
    "ConfigError",
    "Confirms",
    "ConnectionLost",
    "ConnectorKind",
    "Delivery",
    "Endpoint",
    "Envelope",
    "Feature",
    "Finding",
    "HeaderError",
    "Headers",
    "Incoming",
    "JsName",
    "MappingError",
    "Matcher",
    "MessageRejected",
    "Model",
    "Name",
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
    "origin_value",
    "send_one",
    "subject_matcher",
    "take_up_to",
    "unescape_words",
    "unreadable",
    "url_with_scheme",
]
