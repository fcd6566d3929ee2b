"""Reading a config file: YAML with positions, and `${env:...}` / `${file:...}` interpolation.

The file is parsed with PyYAML's SafeLoader (no arbitrary tags) into plain Python values,
while every key, list item and value remembers its line and column, so that any later
error can point at the exact place in the file. Interpolation happens on string scalars:

    ${env:NAME}            the environment variable NAME (an error when unset)
    ${env:NAME:-default}   NAME, or `default` when NAME is unset or empty
    ${file:/path}          the file's content, one trailing newline stripped
    $${                    a literal `${`

A value that took anything from the environment or a file is secret (see bridge.secrets);
a default written in the file is not, since the file already shows it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge import secrets

YamlPath = tuple[str | int, ...]

_PLAIN_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    """Parse and interpolate the YAML file at `path`."""
    text = Path(path).read_text(encoding="utf-8")
    return parse_document(text, str(path), os.environ if environ is None else environ)


def parse_document(text: str, path: str, environ: Any) -> Document:
    """Parse and interpolate YAML `text`; `path` only names the file in messages."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = Document(path=path, data=None)
        if node is not None:
            doc.marks[()] = _mark(node)
            doc.data = _Builder(loader, doc, environ).build(node, ())
        return doc
    except yaml.MarkedYAMLError as exc:
        problem_mark = exc.problem_mark or exc.context_mark
        mark = Mark(problem_mark.line + 1, problem_mark.column + 1) if problem_mark else None
        reason = " ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlSyntaxError(f"invalid YAML: {reason}", mark) from None
    finally:
        loader.dispose()


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a YAML node graph into plain values, recording marks and interpolating."""

    def __init__(self, loader: yaml.SafeLoader, doc: Document, environ: Any) -> None:
        self.loader = loader
        self.doc = doc
        self.environ = environ

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTION_TAGS:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"could not determine a constructor for the tag {node.tag!r}",
                node.start_mark,
            )
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | bool | float):
                    self.doc.problems.append((path, "keys must be plain strings"))
                    continue
                key = str(key)
                child = (*path, key)
                if key in result:
                    self.doc.marks[child] = _mark(key_node)
                    self.doc.problems.append((child, f"duplicate key '{key}'"))
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
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            return self.interpolate(value, path)
        return value

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
            secrets.register(result)
        return result

    def resolve(self, reference: str) -> tuple[str, bool]:
        """The text for `${reference}` and whether it came from outside the file."""
        scheme, sep, rest = reference.partition(":")
        if not sep or scheme not in ("env", "file"):
            raise _ReferenceError(
                f"unknown reference '${{{reference}}}': expected ${{env:NAME}}, "
                "${env:NAME:-default} or ${file:/path}"
            )
        if scheme == "file":
            if not rest:
                raise _ReferenceError("'${file:}' needs a path, as in ${file:/run/secrets/x}")
            try:
                content = Path(rest).read_text(encoding="utf-8")
            except OSError as exc:
                raise _ReferenceError(
                    f"cannot read '{rest}' for ${{file:...}}: {exc.strerror}"
                ) from None
            return content.removesuffix("\n"), True
        name, has_default, default = rest.partition(":-")
        if not _ENV_NAME.fullmatch(name):
            raise _ReferenceError(
                f"'{name}' is not an environment variable name in '${{env:{name}...}}'"
            )
        found = self.environ.get(name)
        if found:
            return str(found), True
        if has_default:
            return default, False
        raise _ReferenceError(f"environment variable {name} is not set (used as ${{env:{name}}})")


class _ReferenceError(Exception):
    pass
