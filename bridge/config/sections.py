"""One section of a config file, read without resolving the rest of it.

The operator commands run beside a bridge, often as another user or in another shell:
`buffer` and `dlq` need only `bridge.data_dir`, `status` only `bridge.admin`. They read
the file with the same parser (positions, bounds, `${env:}`/`${file:}`), but a reference
that cannot be resolved counts only when it lies inside the section they need: the
broker passwords of a file need not be in the environment to list its buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from natsbridge.bridge.config.model import Admin, BridgeSettings
from natsbridge.bridge.config.source import (
    Document,
    YamlPath,
    YamlSyntaxError,
    format_path,
    read_document,
)
from natsbridge.bridge.errors import ConfigError

DATA_DIR: YamlPath = ("bridge", "data_dir")
ADMIN: YamlPath = ("bridge", "admin")


def read_data_dir(path: str | Path) -> Path:
    """`bridge.data_dir` of the config file at `path` (its default when absent)."""
    doc, value = _section(path, DATA_DIR)
    if value is None:
        return Path(BridgeSettings.model_fields["data_dir"].default)
    if not isinstance(value, str) or not value:
        raise ConfigError([_where(doc, DATA_DIR, "expected a directory path")])
    return Path(value)


def read_admin(path: str | Path) -> Admin:
    """`bridge.admin` of the config file at `path`, validated (defaults when absent)."""
    doc, value = _section(path, ADMIN)
    try:
        return Admin.model_validate({} if value is None else value)
    except ValidationError as exc:
        raise ConfigError(
            [
                _where(doc, (*ADMIN, *error["loc"]), error["msg"].removeprefix("Value error, "))
                for error in exc.errors()
            ]
        ) from None


def _section(path: str | Path, section: YamlPath) -> tuple[Document, Any]:
    """The parsed file and the value at `section` (None when absent)."""
    try:
        doc = read_document(path)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config: {exc.strerror or exc}"]) from None
    except YamlSyntaxError as exc:
        mark = f":{exc.mark.line}:{exc.mark.column}" if exc.mark else ""
        raise ConfigError([f"{path}{mark}: {exc}"]) from None
    problems = [
        _where(doc, where, message)
        for where, message in doc.problems
        if where[: len(section)] == section
    ]
    if problems:
        raise ConfigError(problems)
    value: Any = doc.data
    for key in section:
        value = value.get(key) if isinstance(value, dict) else None
    return doc, value


def _where(doc: Document, path: tuple[Any, ...], message: str) -> str:
    mark = doc.mark(path)
    position = f":{mark.line}:{mark.column}" if mark else ""
    return f"{doc.path}{position}: {format_path(path)}: {message}"
