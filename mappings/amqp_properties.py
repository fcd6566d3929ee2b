"""AMQP basic properties and typed header tables ↔ NATS string headers, losslessly.

Pure functions on plain Python values: the AMQP connector turns pika's
``BasicProperties`` into a dict of properties and a dict for its ``headers`` table, and
back. Nothing here imports pika.

Properties
    Each basic property becomes one header (`PROPERTY_HEADERS`): ``content_type`` →
    ``Amqp-Content-Type``, ``content_encoding`` → ``Amqp-Content-Encoding``,
    ``delivery_mode`` → ``Amqp-Delivery-Mode``, ``priority`` → ``Amqp-Priority``,
    ``correlation_id`` → ``Amqp-Correlation-Id``, ``reply_to`` → ``Amqp-Reply-To``,
    ``expiration`` → ``Amqp-Expiration``, ``message_id`` → ``Amqp-Message-Id``,
    ``timestamp`` → ``Amqp-Timestamp``, ``type`` → ``Amqp-Type``, ``user_id`` →
    ``Amqp-User-Id``, ``app_id`` → ``Amqp-App-Id``. ``delivery_mode``, ``priority`` and
    ``timestamp`` (seconds since the epoch, as pika gives it) are integers written in
    decimal; the others are strings (a shortstr that is not UTF-8, which pika hands over
    as bytes, is written ``base64:`` and comes back as the same bytes). A property set to
    None is left out.

Header table
    Each table entry becomes one NATS header of the same name (escaped with
    `mappings.headers.foreign_header_name`: escaped when NATS cannot carry it; a
    reserved ``Nats-*`` or ``Bridge-*`` name, or one named like one of the property
    headers or ``Amqp-Header-Types``, gets its first character escaped). A key that is
    not UTF-8 (pika hands it over as bytes) is read with ``surrogateescape`` and escaped
    like any other: ``b"\xff"`` → ``%ED%B3%BF``. The
    value is written readably and, unless it is a string, its type is recorded in the
    ``Amqp-Header-Types`` header, a JSON object from header name to type code:

    =========  ============================  ==========================================
    type code  Python value                  header value
    =========  ============================  ==========================================
    (none)     str                           the text (``base64:…`` if not plain, see
                                             mappings.headers.encode_value)
    int        int                           decimal
    bool       bool                          ``true`` / ``false``
    float      float                         ``repr`` (``1.5``, ``nan``, ``-inf``)
    decimal    decimal.Decimal               ``str`` (exponent and trailing zeros kept)
    datetime   datetime.datetime             ISO 8601 (``isoformat``; offset kept)
    bytes      bytes / bytearray             as encode_value (text if plain UTF-8)
    void       None                          empty
    table      dict                          JSON, nested values tagged (below)
    array      list / tuple                  JSON, nested values tagged (below)
    =========  ============================  ==========================================

    Inside ``table`` and ``array`` JSON, str, int, float, bool, None, dict and list are
    plain JSON (floats always carry a ``.`` or an exponent, so they stay floats; NaN and
    infinities use Python's ``NaN``/``Infinity``), and the rest are one-key objects:
    ``{"$decimal": "1.20"}``, ``{"$datetime": "2024-05-01T12:00:00+00:00"}``,
    ``{"$bytes": "<base64>"}``. A table key that starts with ``$`` is written with one
    more ``$`` in front, so a tag can never be mistaken for a table.

    Decoding gives back the same values and types, with three documented exceptions:
    bytearray comes back as bytes, tuple as list, and an aware datetime's tzinfo as a
    fixed-offset ``datetime.timezone``.

NATS → AMQP (`headers_to_properties`) reads any NATS headers: property headers become
properties, ``Amqp-Header-Types`` drives the types, and every other header becomes a
table entry: a string, or a list of strings when the NATS header has several values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import HeaderError
from natsbridge.mappings import headers as h

PROPERTY_HEADERS: Final = {
    "content_type": "Amqp-Content-Type",
    "content_encoding": "Amqp-Content-Encoding",
    "delivery_mode": "Amqp-Delivery-Mode",
    "priority": "Amqp-Priority",
    "correlation_id": "Amqp-Correlation-Id",
    "reply_to": "Amqp-Reply-To",
    "expiration": "Amqp-Expiration",
    "message_id": "Amqp-Message-Id",
    "timestamp": "Amqp-Timestamp",
    "type": "Amqp-Type",
    "user_id": "Amqp-User-Id",
    "app_id": "Amqp-App-Id",
}
"""AMQP basic property name -> NATS header name."""

_INT_PROPERTIES: Final = frozenset({"delivery_mode", "priority", "timestamp"})
_PROPERTY_BY_HEADER: Final = {header: prop for prop, header in PROPERTY_HEADERS.items()}
_RESERVED: Final = frozenset(
    name.lower() for name in (*PROPERTY_HEADERS.values(), h.AMQP_HEADER_TYPES)
)

FieldValue = Any
"""A value of an AMQP field table: str, int, bool, float, Decimal, datetime, bytes,
None, or a dict / list of such values."""


def properties_to_headers(
    properties: Mapping[str, object], table: Mapping[str, FieldValue] | None = None
) -> Headers:
    """NATS headers carrying AMQP basic `properties` and the `table` of header values."""
    out: Headers = {}
    for prop, value in properties.items():
        if value is None:
            if prop not in PROPERTY_HEADERS:
                raise HeaderError(f"unknown AMQP basic property {prop!r}")
            continue
        header = PROPERTY_HEADERS.get(prop)
        if header is None:
            hint = " (pass the header table as `table`)" if prop == "headers" else ""
            raise HeaderError(f"unknown AMQP basic property {prop!r}{hint}")
        if prop in _INT_PROPERTIES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise HeaderError(f"AMQP property {prop} must be an int, got {value!r}")
            out[header] = [str(value)]
        else:
            if not isinstance(value, str | bytes):
                raise HeaderError(f"AMQP property {prop} must be a str, got {value!r}")
            out[header] = [h.encode_value(value)]  # bytes: a shortstr that is not UTF-8
    if not table:
        return out
    types: list[tuple[str, str]] = []
    for key, value in table.items():
        name = _table_name(key)
        text, code = _encode_field(value)
        out[name] = [text]
        if code is not None:
            types.append((name, code))
    if types:
        out[h.AMQP_HEADER_TYPES] = [_types_text(tuple(types))]
    return out


# Table keys and type sets repeat from message to message: remember their encodings.
_CACHE_SIZE = 4096
_names: dict[str | bytes, str] = {}
_types_texts: dict[tuple[tuple[str, str], ...], str] = {}


def _table_name(key: str | bytes) -> str:
    """The NATS header name of table key `key` (bytes: a key that is not UTF-8)."""
    name = _names.get(key)
    if name is not None:
        return name
    name = h.foreign_header_name(_text(key), _RESERVED)
    if len(_names) >= _CACHE_SIZE:
        _names.clear()
    _names[key] = name
    return name


def _text(key: object) -> str:
    """A table key as text: bytes that are not UTF-8 (as pika gives them) via surrogateescape."""
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", "surrogateescape")
    raise HeaderError(f"AMQP header table key {key!r} is not a string")


def _types_text(types: tuple[tuple[str, str], ...]) -> str:
    """The Amqp-Header-Types value for (name, code) pairs."""
    text = _types_texts.get(types)
    if text is None:
        text = json.dumps(dict(types), separators=(",", ":"))
        if len(_types_texts) >= _CACHE_SIZE:
            _types_texts.clear()
        _types_texts[types] = text
    return text


def headers_to_properties(
    headers: Mapping[str, Sequence[str]],
) -> tuple[dict[str, object], dict[str | bytes, FieldValue]]:
    """AMQP (properties, header table) for NATS `headers`; inverse of properties_to_headers."""
    types = _types(headers)
    properties: dict[str, object] = {}
    table: dict[str | bytes, FieldValue] = {}
    for name, values in headers.items():
        if name == h.AMQP_HEADER_TYPES or not values:
            continue
        prop = _PROPERTY_BY_HEADER.get(name)
        if prop is not None:
            properties[prop] = _decode_property(prop, values[0])
            continue
        key = _wire_key(h.unescape_header_name(name))
        code = types.get(name)
        if code is not None:
            table[key] = _decode_field(code, values[0], name)
        elif len(values) == 1:
            table[key] = h.decode_text_value(values[0])
        else:
            table[key] = [h.decode_text_value(v) for v in values]
    return properties, table


def _wire_key(key: str) -> str | bytes:
    """A table key as pika writes it: a key read from bytes that were not UTF-8 as those bytes."""
    if key.isascii():
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return key  # a lone surrogate of other origin: the sink refuses it (MappingError)
    return key


def _decode_property(prop: str, value: str) -> object:
    if prop not in _INT_PROPERTIES:
        if not value.startswith(h.BASE64_MARKER):
            return value
        raw = h.decode_value(value)
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return raw  # a shortstr that was not UTF-8 at its source: the same bytes again
    try:
        return int(value)
    except ValueError:
        raise HeaderError(f"header {PROPERTY_HEADERS[prop]} is not an integer: {value!r}") from None


def _types(headers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    values = headers.get(h.AMQP_HEADER_TYPES)
    if not values:
        return {}
    try:
        types = json.loads(values[0])
    except ValueError:
        raise HeaderError(f"{h.AMQP_HEADER_TYPES} is not JSON: {values[0]!r}") from None
    if not isinstance(types, dict) or not all(isinstance(v, str) for v in types.values()):
        raise HeaderError(f"{h.AMQP_HEADER_TYPES} must map header names to type codes")
    return types


def _encode_field(value: FieldValue) -> tuple[str, str | None]:
    """Header text and type code (None for str) of one table value."""
    if isinstance(value, str):
        return h.encode_value(value), None
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, float):
        return repr(value), "float"
    if isinstance(value, Decimal):
        return str(value), "decimal"
    if isinstance(value, datetime):
        return value.isoformat(), "datetime"
    if isinstance(value, bytes | bytearray):
        return h.encode_value(bytes(value)), "bytes"
    if value is None:
        return "", "void"
    if isinstance(value, dict):
        return _dumps(_to_json(value)), "table"
    if isinstance(value, list | tuple):
        return _dumps(_to_json(value)), "array"
    raise HeaderError(f"AMQP header value of type {type(value).__name__} is not supported")


def _decode_field(code: str, text: str, name: str) -> FieldValue:
    try:
        if code == "bool":
            if text not in ("true", "false"):
                raise ValueError(text)
            return text == "true"
        if code == "int":
            return int(text)
        if code == "float":
            return float(text)
        if code == "decimal":
            return Decimal(text)
        if code == "datetime":
            return datetime.fromisoformat(text)
        if code == "bytes":
            return h.decode_value(text)
        if code == "void":
            return None
        if code in ("table", "array"):
            return _from_json(json.loads(text))
    except (ValueError, InvalidOperation, binascii.Error) as exc:
        raise HeaderError(f"header {name!r} is not a valid {code}: {text!r} ({exc})") from None
    raise HeaderError(f"unknown type code {code!r} for header {name!r} in {h.AMQP_HEADER_TYPES}")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _to_json(value: FieldValue) -> object:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for raw_key, item in value.items():
            key = _text(raw_key)
            out["$" + key if key.startswith("$") else key] = _to_json(item)
        return out
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    raise HeaderError(f"AMQP header value of type {type(value).__name__} is not supported")


def _from_json(value: object) -> FieldValue:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, payload),) = value.items()
        if tag.startswith("$") and not tag.startswith("$$"):
            if not isinstance(payload, str):
                raise ValueError(f"tag {tag} needs a string")
            if tag == "$decimal":
                return Decimal(payload)
            if tag == "$datetime":
                return datetime.fromisoformat(payload)
            if tag == "$bytes":
                return base64.b64decode(payload, validate=True)
            raise ValueError(f"unknown tag {tag}")
    return {(k[1:] if k.startswith("$") else k): _from_json(v) for k, v in value.items()}
