"""The files connector's config: its connection, `from:` and `to:` models.

    connections:
      spool: {kind: files, root: /var/spool/natsbridge}
    routes:
      - from: {connection: spool, directory: inbox, pattern: "*.json"}
        to:   {connection: nats, subject: "files.{{wildcard(1)}}"}
      - from: {connection: nats, subject: "reports.>"}
        to:   {connection: spool, directory: outbox, filename: "{{subject}}.csv"}

natsbridge's config loader validates each section against these models (pydantic), and
``natsbridge schema`` puts their fields and descriptions into the JSON Schema.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from natsbridge.sdk import Bytes, Endpoint, Model, Seconds, Template


def _relative(directory: str) -> str:
    path = PurePosixPath(directory)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError("expected a directory inside the connection's root (no '/…', no '..')")
    return directory


Directory = Annotated[str, AfterValidator(_relative)]


class FilesConnection(Model):
    """A directory tree on a local (or mounted) file system."""

    kind: Literal["files"]
    root: str = Field(min_length=1, description="The directory every route's `directory` is in")


class FilesSource(Endpoint):
    """Read each file of a directory as one message."""

    directory: Directory = Field(".", description="Below the connection's root")
    pattern: str = Field(
        "*", min_length=1, description="Glob of the file names to read; each * is a wildcard"
    )
    poll_interval: Seconds = Field(1.0, gt=0, le=60, description="Between two directory scans")
    max_size: Bytes = Field(
        64 * 1024**2, gt=0, description="A larger file is dead-lettered (and moved to rejected/)"
    )
    create: bool = Field(True, description="Create the directory if missing")


class FilesSink(Endpoint):
    """Write each message as one file of a directory."""

    directory: Directory = Field(".", description="Below the connection's root")
    filename: Template = Field(description="The file's name: one message, one name")
    overwrite: bool = Field(
        False, description="Replace a file of the same name (default: dead-letter the message)"
    )
    create: bool = Field(True, description="Create the directory if missing")
