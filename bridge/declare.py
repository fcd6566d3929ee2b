"""Declared resources: what a route creates on a broker, said once and never silently changed.

A connector kind lists the resources a route needs (`ConnectorKind.declarations`: a
JetStream stream, a RabbitMQ exchange or queue, a Kafka topic) with the settings it would
create each with, and reads what the broker has (`ConnectorKind.observe`). The core, here,
does the rest for every kind alike:

* `log_created`: one INFO line when a connector created a resource, with its settings;
* `check`: before a route's first connect, an existing resource whose settings differ
  from the ones the config sets gets one WARNING per setting (ours vs the broker's), or,
  with ``bridge.strict_declarations: true``, refuses the route (a PermanentError);
* `plan`: what ``natsbridge run --dry-run`` shows (would create / exists / differs).

Nothing here changes a resource that exists.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from natsbridge.bridge import logs
from natsbridge.bridge.errors import PermanentError

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Config, Route
    from natsbridge.bridge.kind import Side

log = logging.getLogger("natsbridge.declare")

STRICT_KEY = "bridge.strict_declarations"
"""Where the strict switch lives in the config (named in refusals)."""


@dataclass(frozen=True)
class Declaration:
    """A resource a route needs on its connection, and how the route would create it.

    `settings` are every setting it is created with (broker terms: ``replicas``,
    ``partitions``); `compared` are those the config sets explicitly: only these are
    checked against an existing resource (one the config leaves to defaults is the
    operator's). `create` is False when the route must find it (`why_not_created` says
    why, for the messages).
    """

    resource: str  # "JetStream stream", "RabbitMQ queue", "Kafka topic"
    name: str
    connection: str
    settings: Mapping[str, object] = field(default_factory=dict)
    compared: frozenset[str] = frozenset()
    create: bool = True
    why_not_created: str = ""  # when not `create`: "to.jetstream.create is false"
    where: str = ""  # the config keys that set it ("to.jetstream")

    @property
    def identity(self) -> tuple[str, str, str]:
        """(connection, resource, name): one resource, whichever route declares it."""
        return (self.connection, self.resource, self.name)

    def describe_settings(self) -> str:
        """``replicas=1, storage=file`` (empty when there are none)."""
        return ", ".join(f"{key}={_shown(value)}" for key, value in self.settings.items())


class Difference(NamedTuple):
    """One setting an existing resource has otherwise than the config says."""

    setting: str
    ours: object
    theirs: object

    def __str__(self) -> str:
        return f"{self.setting} ours {_shown(self.ours)}, broker's {_shown(self.theirs)}"


Observed = Mapping[str, object] | None
"""What the broker has: the resource's settings (same names as the declaration's), or
None when it does not exist."""


def differences(declaration: Declaration, observed: Mapping[str, object]) -> list[Difference]:
    """The compared settings whose broker value differs (a setting the broker does not
    report is not compared)."""
    return [
        Difference(key, declaration.settings[key], observed[key])
        for key in sorted(declaration.compared)
        if key in observed and observed[key] != declaration.settings[key]
    ]


_said: set[tuple[object, ...]] = set()


def _once(*key: object) -> bool:
    """True the first time `key` is seen in this process (a warning is logged once)."""
    if key in _said:
        return False
    _said.add(key)
    return True


def log_created(declaration: Declaration) -> None:
    """One INFO line: the resource was created now, with its settings.

    Called only by the connect that created it (one that finds it, or loses a race to
    create it, says nothing): a resource deleted and created again is logged again.
    """
    settings = declaration.describe_settings()
    log.info(
        "created %s '%s' on connection '%s'%s",
        declaration.resource,
        declaration.name,
        declaration.connection,
        f" ({settings})" if settings else "",
        extra={"event": "declared", "connection": declaration.connection},
    )


def refusal(declaration: Declaration, found: Sequence[Difference]) -> str:
    """The one-line error of a strict refusal."""
    return (
        f"{declaration.resource} '{declaration.name}' on connection '{declaration.connection}' "
        f"exists with other settings ({'; '.join(map(str, found))}) and {STRICT_KEY} is true: "
        f"change the resource, or {declaration.where or 'the route'}, or set "
        f"{STRICT_KEY}: false to only warn"
    )


def report(declaration: Declaration, observed: Observed, strict: bool) -> None:
    """Warn once per differing setting of an existing resource; under `strict` refuse it."""
    if observed is None:
        return
    found = differences(declaration, observed)
    if found and strict:
        raise PermanentError(refusal(declaration, found))
    for difference in found:
        if _once("differs", *declaration.identity, difference):
            log.warning(
                "%s '%s' on connection '%s' exists with a different %s: ours %s, broker's %s "
                "(left as it is; %s: true refuses it)",
                declaration.resource,
                declaration.name,
                declaration.connection,
                difference.setting,
                _shown(difference.ours),
                _shown(difference.theirs),
                STRICT_KEY,
                extra={"event": "declared_differs", "connection": declaration.connection},
            )


async def check(route: Route, side: Side, config: Config) -> bool:
    """Compare what `side` of `route` declares with the broker (before its first connect).

    False when the broker could not be asked: the connect that follows reports why, and
    the next connect asks again (so strict is not skipped by a broker that was down).
    """
    from natsbridge.bridge.registry import load_connector

    kind_name = route.source_kind if side == "from" else route.sink_kind
    endpoint = route.source if side == "from" else route.sink
    kind = load_connector(kind_name)
    declared = kind.declarations(route, side)
    if not declared:
        return True
    try:
        with logs.connect_attempt():  # the driver's lines of a failed ask are dropped
            observed = await kind.observe(config.connections[endpoint.connection], declared)
    except NotImplementedError:
        return True
    except Exception as exc:  # the connect right after says it better, once
        log.debug("cannot compare the declared resources of route %s: %s", route.name, exc)
        return False
    for declaration, seen in zip(declared, observed, strict=True):
        report(declaration, seen, config.bridge.strict_declarations)
    return True


def _shown(value: object) -> str:
    if value is None:
        return "unlimited"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
