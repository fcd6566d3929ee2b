"""natsbridge connector for a directory of files: ``kind: files``, as a source and as a sink.

The worked example of natsbridge's connector SDK (docs/connectors.md builds it step by
step). It lives outside natsbridge and registers itself through its own entry point::

    [project.entry-points."natsbridge.connectors"]
    files = "natsbridge_files:connector"

Source (``from:``): each regular file of ``directory`` whose name matches ``pattern`` is
one message: the payload is the file's content, the headers come from its sidecar
``<name>.headers.json`` (a JSON object: name -> string or list of strings) if it has one,
and the address is the file name. Files are read oldest first (modification time). An
acked file moves to ``done/``, a rejected or unreadable one to ``rejected/``; a nacked or
unsettled one stays and is read again. Names starting with ``.`` are never read: write a
file as ``.name`` and rename it when complete (this connector's sink does).

Sink (``to:``): each message becomes the file named by the ``filename`` template, written
atomically and durably (temporary file, fsync, rename, directory fsync), with its headers
in a sidecar.

Placeholders: ``{{file}}`` is the name of the file a message came from; ``{{wildcard(n)}}``
is what the n-th ``*`` of the source's ``pattern`` matched (``order-*.json`` and
``order-42.json`` give ``42``).

Guarantees: at least once. A message's id (for ``exactly_once`` into JetStream) is its file
name and modification time, the same each time that file is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from natsbridge.sdk import (
    BridgeSettings,
    ConnectorKind,
    Endpoint,
    MappingError,
    Matcher,
    Model,
    Origin,
    Placeholder,
    Route,
    origin_value,
)
from natsbridge_files.config import FilesConnection, FilesSink, FilesSource
from natsbridge_files.spool import check_name, glob_regex

if TYPE_CHECKING:
    from natsbridge_files.sink import DirectorySink
    from natsbridge_files.source import DirectorySource

__all__ = ["FilesKind", "FilesOrigin", "connector"]


class FilesOrigin(NamedTuple):
    """Where a message came from: the file's name and the directory it was in."""

    connection: str
    kind: str
    file: str | None = None
    directory: str | None = None


def _check_file_name(name: str) -> None:
    try:
        check_name(name)
    except ValueError as exc:
        raise MappingError(f"files: {exc}") from None


class FilesKind(ConnectorKind):
    """The ``files`` kind: what natsbridge's core asks about it, and its source and sink."""

    name = "files"
    connection_model = FilesConnection
    source_model = FilesSource
    sink_model = FilesSink
    sink_templates = ("filename",)
    address_noun = "file name"
    placeholders: ClassVar[Mapping[str, Placeholder]] = {"file": origin_value("file")}

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The source's glob: ``{{wildcard(n)}}`` reads its n-th ``*``."""
        assert isinstance(source, FilesSource)
        return (source.pattern,)

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        """What each ``*`` of the first matching glob stands for in a file name."""
        regexes = [glob_regex(pattern) for pattern in patterns]

        def captures(name: str) -> tuple[str, ...] | None:
            for regex in regexes:
                found = regex.fullmatch(name)
                if found is not None:
                    return found.groups()
            return None

        return captures

    def stars(self, pattern: str) -> int:
        """The wildcards of a glob."""
        return pattern.count("*")

    def check_address(self, connection: Model) -> Callable[[str], None]:
        """A rendered file name must be one name in the directory, not a path."""
        return _check_file_name

    def describe_source(self, source: Model) -> str:
        """ "directory inbox (*.json)"."""
        assert isinstance(source, FilesSource)
        return f"directory {source.directory} ({source.pattern})"

    def describe_sink(self, sink: Model) -> str:
        """ "directory outbox"."""
        assert isinstance(sink, FilesSink)
        return f"directory {sink.directory}"

    def preview_origin(self, source: Endpoint, address: str, partition: int | None) -> Origin:
        """The origin of a file named `address`, for ``natsbridge map``."""
        assert isinstance(source, FilesSource)
        return FilesOrigin(source.connection, self.name, address, source.directory)

    def open_source(
        self, route: Route, connection: Model, bridge: BridgeSettings
    ) -> DirectorySource:
        """The source for `route`; its module is imported only when a route runs."""
        from natsbridge_files.source import DirectorySource

        assert isinstance(connection, FilesConnection)
        return DirectorySource(route, connection)

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> DirectorySink:
        """The sink for `route`; its module is imported only when a route runs."""
        from natsbridge_files.sink import DirectorySink

        assert isinstance(connection, FilesConnection)
        return DirectorySink(route, connection)


connector = FilesKind()
"""The instance the entry point names."""
