"""Reading a config file: YAML with positions, and `${env:...}` / `${file:...}` interpolation.

The file is parsed with a bounded PyYAML SafeLoader (no arbitrary tags) into plain Python
values, while every key, list item and value remembers its line and column, so that any
later error can point at the exact place in the file. Interpolation happens on string
scalars:

    ${env:NAME}            the environment variable NAME (an error when unset)
    ${env:NAME:-default}   NAME, or `default` when NAME is unset or empty
    ${file:/path}          a regular file's content, one trailing newline stripped
    $${                    a literal `${`

Hostile input ends as a positioned YamlSyntaxError, never an exception from deep inside:
the file's size, its nesting depth and the number of values after alias expansion are
bounded (billion laughs), and it must be UTF-8 text without control characters. A value
that took anything from the environment or a file is remembered in `secret_paths`, so
that errors show it as `***`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

YamlPath = tuple[str | int, ...]

_PLAIN_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_CONFIG_BYTES = 1024**2
"""The largest config file read (1 MiB); real ones are a few KiB."""
MAX_FILE_REFERENCE_BYTES = 64 * 1024
"""The largest file a `${file:...}` reference reads (64 KiB): a secret, not a payload."""
MAX_DEPTH = 32
"""The deepest nesting of mappings and lists; the format itself needs 6."""
MAX_VALUES = 100_000
"""The most keys, items and values after alias expansion (refuses billion-laughs files)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based line and column in the config file."""

    line: int
    column: int


@dataclass(slots=True)
class Document:
    """A parsed config file: plain values plus where each came from."""

    path: str
    data: Any
    marks: dict[YamlPath, Mark] = field(default_factory=dict)
    # Where each scalar's text starts (after an opening quote), for positions inside it.
    value_marks: dict[YamlPath, Mark] = field(default_factory=dict)
    secret_paths: set[YamlPath] = field(default_factory=set)
    problems: list[tuple[YamlPath, str]] = field(default_factory=list)

    def mark(self, path: YamlPath) -> Mark | None:
        """The position of `path`, or of its nearest ancestor that has one."""
        while path:
            found = self.marks.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.marks.get(())


class YamlSyntaxError(Exception):
    """The file is not valid YAML; carries the parser's position."""

    def __init__(self, message: str, mark: Mark | None) -> None:
        self.mark = mark
        super().__init__(message)


def format_path(path: YamlPath) -> str:
    """`('routes', 1, 'to', 'subject')` -> `routes[1].to.subject`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def read_document(path: str | Path, environ: dict[str, str] | None = None) -> Document:
    """Parse and interpolate the YAML file at `path`; raise OSError or YamlSyntaxError."""
    text = decode_text(read_regular_file(path, MAX_CONFIG_BYTES))
    return parse_document(text, str(path), os.environ if environ is None else environ)


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; never blocks.

    Raises OSError; RefusedFile for a FIFO, device, socket or directory and for a file
    larger than `limit` (`/dev/zero` would otherwise be read without end).
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except ValueError:  # an embedded NUL byte
        raise RefusedFile("the path contains a NUL byte") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RefusedFile(f"not a regular file (a {_file_type(mode)})")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RefusedFile(f"larger than the limit of {limit} bytes")
    return data


def decode_text(data: bytes) -> str:
    """UTF-8 `data` as text; raise a positioned YamlSyntaxError for anything else."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlSyntaxError("invalid text: UTF-16 (save the file as UTF-8)", Mark(1, 1))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(
            f"invalid text: byte 0x{data[exc.start]:02x} is not UTF-8 (save the file as UTF-8)",
            _mark_at(data[: exc.start].decode("utf-8", errors="replace")),
        ) from None
    text = text.removeprefix("\ufeff")
    bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if bad is not None:
        raise YamlSyntaxError(
            f"invalid text: control character U+{ord(bad.group()):04X} is not allowed",
            _mark_at(text[: bad.start()]),
        )
    return text


def parse_document(text: str, path: str, environ: Any) -> Document:
    """Parse and interpolate YAML `text`; `path` only names the file in messages."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        doc = Document(path=path, data=None)
        doc.marks[()] = _mark(node) if node is not None else Mark(1, 1)
        if node is not None:
            doc.data = _Builder(loader, doc, environ).build(node, ())
        return doc
    except yaml.MarkedYAMLError as exc:
        problem_mark = exc.problem_mark or exc.context_mark
        mark = Mark(problem_mark.line + 1, problem_mark.column + 1) if problem_mark else None
        reason = " ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlSyntaxError(f"invalid YAML: {shorten(reason)}", mark) from None
    except yaml.reader.ReaderError as exc:  # text that did not come through decode_text()
        raise YamlSyntaxError(
            f"invalid text: {exc.reason}", _mark_at(text[: exc.position])
        ) from None
    finally:
        loader.dispose()


def shorten(text: str, limit: int = 200) -> str:
    """`text` cut to about `limit` characters, saying how long it was (for error messages)."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}… ({len(text)} characters)"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting, too many nodes and merges beyond MAX_VALUES."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        # Each level costs a few Python frames: 2,000 `[` would raise RecursionError.
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self.nodes += 1
        if self.nodes > MAX_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_VALUES} values", event.start_mark
            )
        self.depth += 1
        try:
            return cast(yaml.Node, super().compose_node(parent, index))
        finally:
            self.depth -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # PyYAML releases that do not deduplicate merged keys double `<<: [*m, *m]` per level.
        super().flatten_mapping(node)
        if len(node.value) > MAX_VALUES:
            raise _too_many_values(node)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_at(before: str) -> Mark:
    """The position just after `before`, the text that precedes it in the file."""
    line_start = before.rfind("\n") + 1
    return Mark(before.count("\n") + 1, len(before) - line_start + 1)


def _too_many_values(node: yaml.Node) -> yaml.MarkedYAMLError:
    return yaml.constructor.ConstructorError(
        None,
        None,
        f"more than {MAX_VALUES} values after expanding aliases (an alias bomb?)",
        node.start_mark,
    )


def _file_type(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "device")


class _Builder:
    """Turns a YAML node graph into plain values, recording marks and interpolating."""

    def __init__(self, loader: yaml.SafeLoader, doc: Document, environ: Any) -> None:
        self.loader = loader
        self.doc = doc
        self.environ = environ
        self.values = 0  # built so far, counting every expansion of an alias

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _too_many_values(node)
        if len(path) > MAX_DEPTH:  # nesting through aliases: `&a [*a]`, an alias in a deep list
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", node.start_mark
            )
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTION_TAGS:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"could not determine a constructor for the tag {shorten(node.tag)!r}",
                node.start_mark,
            )
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str | int | bool | float):
                    self.doc.problems.append((path, "keys must be plain strings"))
                    continue
                key = str(key)
                child = (*path, key)
                if key in result:
                    self.doc.marks[child] = _mark(key_node)
                    self.doc.problems.append((child, f"duplicate key '{shorten(key)}'"))
                    continue
                self.doc.marks[child] = _mark(key_node)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item_node in enumerate(node.value):
                child = (*path, index)
                self.doc.marks[child] = _mark(item_node)
                items.append(self.build(item_node, child))
            return items
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        start = _mark(node)
        self.doc.value_marks[path] = Mark(start.line, start.column + int(quoted))
        value = self.scalar(node)
        if isinstance(value, str) and "$" in value:
            return self.interpolate(value, path)
        return value

    def scalar(self, node: yaml.Node) -> Any:
        """A scalar's value; a value its tag cannot hold is a positioned error."""
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # `!!timestamp 2001-13-99`, 5,000 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid {node.tag.rpartition(':')[2]}: {exc}", node.start_mark
            ) from None

    def interpolate(self, value: str, path: YamlPath) -> str | None:
        secret = False
        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal secret, failed
            if match.group(0) == "$${":
                return "${"
            try:
                text, from_outside = self.resolve(match.group(1))
            except _ReferenceError as exc:
                self.doc.problems.append((path, str(exc)))
                failed = True
                return ""
            secret = secret or from_outside
            return text

        result = _REFERENCE.sub(substitute, value)
        if failed:
            return None
        if secret:
            self.doc.secret_paths.add(path)
        return result

    def resolve(self, reference: str) -> tuple[str, bool]:
        """The text for `${reference}` and whether it came from outside the file."""
        scheme, sep, rest = reference.partition(":")
        if not sep or scheme not in ("env", "file"):
            raise _ReferenceError(
                f"unknown reference '${{{shorten(reference)}}}': expected ${{env:NAME}}, "
                "${env:NAME:-default} or ${file:/path}"
            )
        if scheme == "file":
            if not rest:
                raise _ReferenceError("'${file:}' needs a path, as in ${file:/run/secrets/x}")
            try:
                content = read_regular_file(rest, MAX_FILE_REFERENCE_BYTES).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise _ReferenceError(
                    f"cannot read '{shorten(rest)}' for ${{file:...}}: {reason}"
                ) from None
            return content.removesuffix("\n"), True
        name, has_default, default = rest.partition(":-")
        if not _ENV_NAME.fullmatch(name):
            raise _ReferenceError(
                f"'{shorten(name)}' is not an environment variable name in "
                f"'${{env:{shorten(name)}...}}'"
            )
        found = self.environ.get(name)
        if found:
            return str(found), True
        if has_default:
            return default, False
        raise _ReferenceError(f"environment variable {name} is not set (used as ${{env:{name}}})")


class _ReferenceError(Exception):
    pass


class RefusedFile(OSError):
    """A path natsbridge will not read: not a regular file, or larger than the limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EINVAL, reason)
