"""Address templates in NATS's subject-mapping syntax, compiled once, rendered per message.

A template is the text of ``to.subject``, ``to.routing_key``, ``to.topic``, ``to.key`` or
``to.destination``: literal text with ``{{…}}`` placeholders, anywhere in the text.

Placeholders: each source kind declares its own (bridge.kind, ``placeholders``), e.g.
    ``{{subject}}``                       nats: the subject the message arrived on
    ``{{routing_key}}`` ``{{exchange}}`` ``{{queue}}``                            amqp
    ``{{topic}}`` ``{{partition}}`` ``{{key}}``                                  kafka
    ``{{destination}}``                   stomp: destination without its prefix
                                          (``/topic/``, ``/queue/``, ``/exchange/X/`` …)
and these are available from every source:
    ``{{header(NAME)}}``                  any: first value of header NAME (case-sensitive)
    ``{{wildcard(n)}}``                   the n-th ``*`` (from 1) of the source pattern
                                          that the address matched (nats subject pattern,
                                          AMQP binding key, STOMP destination pattern)
    ``{{partition(n, i, j…)}}``           nats-server's hash partition of wildcards i, j…
                                          into n buckets; ``{{partition(n)}}`` hashes the
                                          whole source address
    ``{{split(i, sep)}}`` ``{{splitFromLeft(i, n)}}`` ``{{splitFromRight(i, n)}}``
    ``{{sliceFromLeft(i, n)}}`` ``{{sliceFromRight(i, n)}}`` ``{{left(i, n)}}``
    ``{{right(i, n)}}``                   nats-server's transforms of wildcard i
                                          (mappings.transforms)

Spelling: as nats-server, spaces are allowed inside the braces and around arguments
(``{{ wildcard( 1 ) }}``) and function names ignore case (``{{SplitFromLeft(1,2)}}``);
natsbridge ignores case in every placeholder name. The header name may be quoted
(``{{header("X-Tenant")}}``). nats-server's legacy ``$1`` is read as ``{{wildcard(1)}}``
when it is a whole token of a template whose target is NATS. ``{{random(n)}}`` is refused:
it would break ordering and dedup.

Sources: ``{{wildcard(n)}}`` and ``{{partition(n)}}`` read the address the message arrived
on (the source kind's ``address``: its Origin's, else ``Envelope.subject``), matched
against the source's patterns by the kind's ``match``. Wildcards come from the first
source pattern the address matches; with several patterns (AMQP binding keys) n must
exist in every one of them.

NATS targets (a sink kind whose ``subject_addresses`` is set): values that do not come
from a NATS subject (routing keys, topics, keys, destinations, header values) are escaped
word by word with mappings.escaping, so the dots of ``eu.created`` stay token separators
while a space, ``*`` alone, an empty word or non-ASCII is percent-escaped (a placeholder
may give its own tokens instead). Values from a NATS source pass through unchanged, as in
nats-server. The rendered subject is validated; a bad one raises SubjectError.

Errors: compile errors are TemplateError with the 0-based `position` of the offending
placeholder or argument; render errors (missing header, address that matches no source
pattern, missing Kafka key …) are TemplateError without a position, and an invalid
rendered subject is SubjectError. Both are MappingError: the message is dead-lettered.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Final, cast

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConfigError, HeaderError, SubjectError, TemplateError
from natsbridge.mappings import subjects, transforms
from natsbridge.mappings.escaping import escape_token, escape_words
from natsbridge.mappings.headers import validate_header_name

if TYPE_CHECKING:
    from natsbridge.bridge.kind import ConnectorKind

Captures = tuple[str, ...]
Getter = Callable[[Envelope, Captures], str]
Matcher = Callable[[str], Captures | None]
"""The ``*`` captures of an address against a source's patterns, or None if none matches."""
# Functions: lower-case name -> (canonical spelling, argument shape).
_FUNCTIONS: Final = {
    "wildcard": ("wildcard", "i"),
    "partition": ("partition", "n,i*"),
    "split": ("split", "i,sep"),
    "splitfromleft": ("splitFromLeft", "i,n"),
    "splitfromright": ("splitFromRight", "i,n"),
    "slicefromleft": ("sliceFromLeft", "i,n"),
    "slicefromright": ("sliceFromRight", "i,n"),
    "left": ("left", "i,n"),
    "right": ("right", "i,n"),
    "header": ("header", "name"),
}
_CUTTERS: Final[dict[str, Callable[[str, int], list[str]]]] = {
    "splitfromleft": transforms.split_from_left,
    "splitfromright": transforms.split_from_right,
    "slicefromleft": transforms.slice_from_left,
    "slicefromright": transforms.slice_from_right,
    "left": transforms.left,
    "right": transforms.right,
}
_BODY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*", re.DOTALL)
_LEGACY = re.compile(r"\$(\d+)")
_INT = re.compile(r"[+-]?\d+")


class Template:
    """A compiled template: `render(envelope)` gives the target address."""

    __slots__ = (
        "_capture",
        "_getters",
        "_literals",
        "_single",
        "_validate",
        "placeholders",
        "source_kind",
        "target_kind",
        "text",
    )

    def __init__(
        self,
        text: str,
        source_kind: str,
        target_kind: str,
        parts: list[str | Getter],
        placeholders: tuple[str, ...],
        capture: Callable[[Envelope], Captures] | None,
        subject: bool,
    ) -> None:
        self.text = text
        self.source_kind = source_kind
        self.target_kind = target_kind
        self.placeholders = placeholders
        # Literals and getters alternate: literal, getter, literal, …, literal.
        literals: list[str] = [""]
        getters: list[Getter] = []
        for part in parts:
            if isinstance(part, str):
                literals[-1] += part
            else:
                getters.append(part)
                literals.append("")
        self._literals = tuple(literals)
        self._getters = tuple(getters)
        self._capture = capture
        self._single = self._literals[0] if not getters else None
        self._validate = subject

    def __repr__(self) -> str:
        return f"Template({self.text!r}, {self.source_kind} -> {self.target_kind})"

    @property
    def is_literal(self) -> bool:
        """True when the template has no placeholder (render always gives `text`)."""
        return not self._getters

    def render(self, env: Envelope) -> str:
        """The target address for `env`; MappingError when it cannot be made."""
        if self._single is not None:
            return self._single
        caps: Captures = () if self._capture is None else self._capture(env)
        lits = self._literals
        getters = self._getters
        if len(getters) == 1:
            out = lits[0] + getters[0](env, caps) + lits[1]
        elif len(getters) == 2:
            out = lits[0] + getters[0](env, caps) + lits[1] + getters[1](env, caps) + lits[2]
        else:
            pieces = [lits[0]]
            for getter, lit in zip(getters, lits[1:], strict=True):
                pieces.append(getter(env, caps))
                pieces.append(lit)
            out = "".join(pieces)
        if self._validate and not subjects.is_valid_subject(out):
            try:
                subjects.validate_subject(out)
            except SubjectError as exc:
                raise SubjectError(
                    f"template {self.text!r} rendered a bad subject: {exc}"
                ) from None
        return out


def compile_template(
    text: str,
    *,
    source_kind: str,
    source_patterns: Sequence[str] = (),
    target_kind: str,
) -> Template:
    """Compile `text` for a route from `source_kind` to `target_kind`; TemplateError if bad.

    `source_patterns` are the route's from-side patterns, in the source kind's syntax
    (its `source_patterns`): NATS subject patterns, AMQP binding keys, STOMP destination
    patterns, Kafka topics.
    """
    source, target = _kind("source", source_kind), _kind("target", target_kind)
    return _Compiler(text, source, tuple(source_patterns), target).compile()


def _kind(label: str, name: str) -> ConnectorKind:
    """The installed kind `name`; TemplateError naming the installed ones if there is none."""
    from natsbridge.bridge.registry import available, load_connector  # it imports the kinds

    installed = tuple(available())
    if name not in installed:
        raise TemplateError(f"unknown {label} kind {name!r}: expected one of {installed}")
    try:
        return load_connector(name)
    except ConfigError as exc:
        raise TemplateError("; ".join(exc.problems)) from None


def match_source(source_kind: str, patterns: Iterable[str], address: str) -> Captures | None:
    """The ``*`` captures of `address` against the first of `patterns` it matches, or None.

    An empty `patterns` matches everything with no captures. Kafka patterns are topic
    names compared exactly.
    """
    pats = tuple(patterns)
    if not pats:
        return ()
    return _kind("source", source_kind).match(pats)(address)


def subject_matcher(patterns: Sequence[str]) -> Matcher:
    """A matcher of subjects against valid NATS subject `patterns`, giving ``*`` captures."""
    compiled = [_star_matcher(p) for p in patterns]
    if len(compiled) == 1:
        only = compiled[0]
        return lambda address: only(address.split("."))

    def match_nats(address: str) -> Captures | None:
        toks = address.split(".")
        for match in compiled:
            caps = match(toks)
            if caps is not None:
                return caps
        return None

    return match_nats


def _star_matcher(pattern: str) -> Callable[[list[str]], Captures | None]:
    """A matcher of tokenized subjects against NATS `pattern`, giving its ``*`` captures."""
    ptoks = pattern.split(".")
    tail = ptoks[-1] == ">"
    if tail:
        ptoks.pop()
    size = len(ptoks)
    literal_at = [i for i, t in enumerate(ptoks) if t != "*"]
    stars = [i for i, t in enumerate(ptoks) if t == "*"]
    literals = tuple(ptoks[i] for i in literal_at)
    # itemgetter fetches several tokens in one C call; wrap the 0- and 1-item cases.
    get_literals = _getter(literal_at)
    get_stars = _getter(stars)

    def match(toks: list[str]) -> Captures | None:
        n = len(toks)
        if (n <= size) if tail else (n != size):
            return None
        if get_literals(toks) != literals:
            return None
        return get_stars(toks)

    return match


def _getter(indexes: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    if not indexes:
        return lambda toks: ()
    if len(indexes) == 1:
        i = indexes[0]
        return lambda toks: (toks[i],)
    return cast("Callable[[list[str]], tuple[str, ...]]", itemgetter(*indexes))


class _Compiler:
    """One compilation: parses the text and builds the getters."""

    def __init__(
        self, text: str, source: ConnectorKind, patterns: tuple[str, ...], target: ConnectorKind
    ) -> None:
        self.text = text
        self.source = source
        self.patterns = patterns
        self.target = target
        self.names: dict[str, None] = {}
        self.uses_captures = False
        self.subject = target.subject_addresses  # the template renders a NATS subject
        # Escape foreign values for a NATS target; NATS values pass through.
        self.escape_foreign = self.subject and not source.subject_addresses
        self.matcher = source.match(patterns) if patterns else None  # checks the patterns

    def error(self, message: str, position: int) -> TemplateError:
        return TemplateError(message, position)

    def compile(self) -> Template:
        text = self.text
        parts: list[str | Getter] = []
        i = 0
        while True:
            start = text.find("{{", i)
            close = text.find("}}", i)
            if close != -1 and (start == -1 or close < start):
                raise self.error("'}}' without a matching '{{'", close)
            if start == -1:
                self._literal(text[i:], i, parts)
                break
            self._literal(text[i:start], i, parts)
            end = text.find("}}", start + 2)
            if end == -1:
                raise self.error("'{{' is never closed with '}}'", start)
            inner = text[start + 2 : end]
            nested = inner.find("{{")
            if nested != -1:
                raise self.error("'{{' inside a placeholder", start + 2 + nested)
            parts.append(self._placeholder(inner, start))
            i = end + 2
        if self.subject:
            self._check_skeleton(parts)
        capture = self._capture() if self.uses_captures else None
        return Template(
            text,
            self.source.name,
            self.target.name,
            parts,
            tuple(self.names),
            capture,
            self.subject,
        )

    def _literal(self, literal: str, offset: int, parts: list[str | Getter]) -> None:
        if not literal:
            return
        if not self.subject:
            parts.append(literal)
            return
        # nats-server's legacy "$n" token means {{wildcard(n)}}.
        pos = 0
        for m in _LEGACY.finditer(literal):
            begin, end = offset + m.start(), offset + m.end()
            whole = (begin == 0 or self.text[begin - 1] == ".") and (
                end == len(self.text) or self.text[end] == "."
            )
            if not whole:
                continue
            if m.start() > pos:
                parts.append(literal[pos : m.start()])
            parts.append(self._wildcard(int(m.group(1)), begin, f"${m.group(1)}"))
            pos = m.end()
        if pos < len(literal):
            parts.append(literal[pos:])

    def _check_skeleton(self, parts: list[str | Getter]) -> None:
        # With every value replaced by a plain token the subject must already be valid.
        skeleton = ""
        origin: list[int] = []  # template offset of each skeleton character
        offset = 0
        for part in parts:
            if isinstance(part, str):
                at = self.text.find(part, offset)
                origin.extend(range(at, at + len(part)))
                skeleton += part
                offset = at + len(part)
            else:
                at = self.text.find("{{", offset)
                at = offset if at == -1 else at
                origin.append(at)
                skeleton += "x"
                close = self.text.find("}}", at)
                offset = at + 1 if close == -1 else close + 2
        try:
            subjects.validate_subject(skeleton)
        except SubjectError as exc:
            where = _first_problem(skeleton)
            position = origin[where] if where < len(origin) else len(self.text)
            raise self.error(
                f"this template cannot give a valid subject: {exc} (placeholders shown as 'x')",
                position,
            ) from None

    def _placeholder(self, inner: str, start: int) -> Getter:
        m = _BODY.fullmatch(inner)
        if m is None:
            raise self.error(f"malformed placeholder {{{{{inner}}}}}", start)
        raw_name, raw_args = m.group(1), m.group(2)
        name = raw_name.lower()
        shown = f"{{{{{inner.strip()}}}}}"
        if raw_args is None:
            if name in self.source.placeholders:
                return self._field(name)
            if name in _fields():
                raise self._unavailable(name, start, shown)
            if name in _FUNCTIONS:
                canon, shape = _FUNCTIONS[name]
                raise self.error(f"{shown} needs arguments: {{{{{canon}({shape})}}}}", start)
            raise self._unknown(raw_name, shown, start)
        if name not in _FUNCTIONS:
            if name in _fields():
                raise self.error(f"{shown} takes no arguments: write {{{{{name}}}}}", start)
            if name == "random":
                raise self.error(
                    f"{shown} is not supported: a random subject breaks ordering and dedup",
                    start,
                )
            raise self._unknown(raw_name, shown, start)
        args_offset = start + 2 + m.start(2)
        args = _split_args(raw_args, args_offset)
        self.names.setdefault(_FUNCTIONS[name][0], None)
        if name == "header":
            return self._header(args, start, shown)
        if name == "wildcard":
            self._arity(args, 1, 1, start, shown)
            return self._wildcard(self._int(args[0], shown), args[0][1], shown)
        if name == "partition":
            return self._partition(args, start, shown)
        if name == "split":
            self._arity(args, 2, 2, start, shown)
            index = self._index(args[0], shown)
            sep, sep_pos = args[1]
            if sep == "" or " " in sep or "." in sep:
                raise self.error(
                    f"{shown}: the separator must be non-empty, without ' ' or '.'", sep_pos
                )
            return self._pieces(index, lambda token: transforms.split(token, sep))
        cutter = _CUTTERS[name]
        self._arity(args, 2, 2, start, shown)
        index = self._index(args[0], shown)
        n = self._int(args[1], shown)
        return self._pieces(index, lambda token: cutter(token, n))

    def _unknown(self, raw_name: str, shown: str, start: int) -> TemplateError:
        fields = _fields()
        names = sorted({*fields, *(canon for canon, _ in _FUNCTIONS.values())})
        close = difflib.get_close_matches(raw_name, names, n=1, cutoff=0.6)
        if not close:
            lowered = {n.lower(): n for n in names}
            close = [lowered[c] for c in difflib.get_close_matches(raw_name.lower(), lowered, n=1)]
        hint = ""
        if close:
            function = _FUNCTIONS.get(close[0].lower())
            args = f"({function[1]})" if function and close[0] not in fields else ""
            hint = f"; did you mean {{{{{close[0]}{args}}}}}?"
        return self.error(f"unknown placeholder {shown}{hint}", start)

    def _unavailable(self, name: str, start: int, shown: str) -> TemplateError:
        hint = " (for a hash partition write {{partition(n, i…)}})" if name == "partition" else ""
        wanted = " or ".join(_fields()[name])
        return self.error(
            f"{shown} is only available from a {wanted} source, and this route's "
            f"source is {self.source.name}{hint}",
            start,
        )

    def _field(self, name: str) -> Getter:
        self.names.setdefault(name, None)
        placeholder = self.source.placeholders[name]
        get = placeholder.get
        if self.subject and placeholder.tokens is not None:
            tokens = placeholder.tokens
            return lambda env, caps: tokens(env)
        if self.escape_foreign:
            return lambda env, caps: escape_words(get(env))
        return lambda env, caps: get(env)

    def _header(self, args: list[tuple[str, int]], start: int, shown: str) -> Getter:
        self._arity(args, 1, 1, start, shown)
        header, pos = args[0]
        if len(header) >= 2 and header[0] == header[-1] and header[0] in "\"'":
            header = header[1:-1]
        try:
            validate_header_name(header)
        except HeaderError as exc:
            raise self.error(f"{shown}: {exc}", pos) from None
        escape = self.subject

        def get(env: Envelope, caps: Captures) -> str:
            values = env.headers.get(header)
            if not values:
                raise TemplateError(f"{shown}: the message has no header {header!r}")
            return escape_words(values[0]) if escape else values[0]

        return get

    def _arity(
        self, args: list[tuple[str, int]], low: int, high: int | None, start: int, shown: str
    ) -> None:
        if len(args) < low or (len(args) == 1 and args[0][0] == "" and low > 0):
            raise self.error(f"{shown}: not enough arguments", start)
        if high is not None and len(args) > high:
            raise self.error(f"{shown}: too many arguments (at most {high})", start)

    def _int(self, arg: tuple[str, int], shown: str) -> int:
        value, pos = arg
        if _INT.fullmatch(value) is None:
            raise self.error(f"{shown}: argument {value!r} is not an integer", pos)
        number = int(value)
        if abs(number) > 2**31 - 1:
            raise self.error(f"{shown}: argument {value} is out of range", pos)
        return number

    def _index(self, arg: tuple[str, int], shown: str) -> int:
        """Validate a wildcard index argument; returns it 0-based."""
        return self._check_index(self._int(arg, shown), arg[1], shown) - 1

    def _check_index(self, n: int, pos: int, shown: str) -> int:
        if n < 1:
            raise self.error(f"{shown}: wildcard indexes start at 1, got {n}", pos)
        if not self.patterns:
            raise self.error(
                f"{shown}: the route has no source pattern to take wildcards from", pos
            )
        counts = [(self.source.stars(p), p) for p in self.patterns]
        fewest, pattern = min(counts)
        if fewest == 0:
            raise self.error(f"{shown}: the source pattern {pattern!r} has no '*' wildcard", pos)
        if n > fewest:
            raise self.error(
                f"{shown}: wildcard {n} is out of range, the source pattern {pattern!r} "
                f"has {fewest} '*'",
                pos,
            )
        self.uses_captures = True
        return n

    def _wildcard(self, n: int, pos: int, shown: str) -> Getter:
        self.names.setdefault("wildcard", None)
        i = self._check_index(n, pos, shown) - 1
        if self.escape_foreign:
            return lambda env, caps: escape_token(caps[i])
        return lambda env, caps: caps[i]

    def _partition(self, args: list[tuple[str, int]], start: int, shown: str) -> Getter:
        self._arity(args, 1, None, start, shown)
        buckets = self._int(args[0], shown)
        if buckets < 0:
            raise self.error(f"{shown}: the number of partitions cannot be negative", args[0][1])
        if len(args) == 1:
            address = self.source.address.get
            return lambda env, caps: transforms.partition(address(env), buckets)
        indexes = [self._index(arg, shown) for arg in args[1:]]
        if len(indexes) == 1:
            i = indexes[0]
            return lambda env, caps: transforms.partition(caps[i], buckets)
        return lambda env, caps: transforms.partition("".join([caps[i] for i in indexes]), buckets)

    def _pieces(self, index: int, cut: Callable[[str], list[str]]) -> Getter:
        if self.escape_foreign:
            return lambda env, caps: ".".join([escape_token(p) for p in cut(caps[index])])
        return lambda env, caps: ".".join(cut(caps[index]))

    def _capture(self) -> Callable[[Envelope], Captures]:
        address = self.source.address.get
        matcher = self.matcher
        assert matcher is not None  # _check_index refuses wildcards without patterns
        patterns = self.patterns
        what = self.source.address_noun

        def capture(env: Envelope) -> Captures:
            addr = address(env)
            caps = matcher(addr)
            if caps is None:
                shown = patterns[0] if len(patterns) == 1 else list(patterns)
                raise TemplateError(f"{what} {addr!r} does not match {shown!r}")
            return caps

        return capture


def _first_problem(subject: str) -> int:
    """Offset of the first thing that makes `subject` invalid (for error positions)."""
    bad = re.search(r"[\x00-\x20\x7f]", subject)
    start = 0
    for token in subject.split("."):
        end = start + len(token)
        if bad is not None and bad.start() <= end:
            return bad.start()
        if token in ("", "*", ">"):
            return start
        start = end + 1
    return 0


def _split_args(raw: str, offset: int) -> list[tuple[str, int]]:
    """Comma-separated arguments, stripped, each with its offset in the template."""
    args: list[tuple[str, int]] = []
    pos = 0
    for piece in raw.split(","):
        stripped = piece.strip()
        lead = len(piece) - len(piece.lstrip())
        args.append((stripped, offset + pos + lead))
        pos += len(piece) + 1
    return args


def _fields() -> dict[str, list[str]]:
    """Every installed source kind's placeholder names, each with the kinds that fill it."""
    from natsbridge.bridge.registry import all_kinds

    fields: dict[str, list[str]] = {}
    for kind in all_kinds().values():
        for name in kind.placeholders:
            fields.setdefault(name, []).append(kind.name)
    return fields
