"""YAML reading and `${env:...}` / `${file:...}` interpolation, including property tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.config.source import Mark, YamlSyntaxError, format_path, parse_document

env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
plain_text = st.text(st.characters(blacklist_characters="$\x00", blacklist_categories=["Cs"]))
env_values = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=30)


def interpolate(text: str, environ: dict[str, str]) -> tuple[object, list[str]]:
    """The value of `key: <text>` (as a YAML double-quoted string) and the problems found."""
    doc = parse_document(f"key: {yaml_quote(text)}\n", "t.yaml", environ)
    return doc.data["key"], [message for _, message in doc.problems]


def is_secret(text: str, environ: dict[str, str]) -> bool:
    """Whether `key: <text>` is marked secret (errors then show its value as ***)."""
    return ("key",) in parse_document(f"key: {yaml_quote(text)}\n", "t.yaml", environ).secret_paths


def yaml_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\U{ord(c):08x}" for c in escaped) + '"'


@given(plain_text)
def test_text_without_references_is_unchanged(text: str) -> None:
    assert interpolate(text, {}) == (text, [])


@given(env_names, env_values, plain_text, plain_text)
def test_env_reference_is_replaced_and_secret(
    name: str, value: str, before: str, after: str
) -> None:
    result, problems = interpolate(f"{before}${{env:{name}}}{after}", {name: value})
    assert problems == []
    assert result == f"{before}{value}{after}"
    assert is_secret(f"{before}${{env:{name}}}{after}", {name: value})


@given(env_names, plain_text.filter(lambda t: "}" not in t))
def test_default_applies_when_unset_or_empty(name: str, default: str) -> None:
    assert interpolate(f"${{env:{name}:-{default}}}", {}) == (default, [])
    assert interpolate(f"${{env:{name}:-{default}}}", {name: ""}) == (default, [])


@given(env_names)
def test_unset_variable_is_named_in_the_error(name: str) -> None:
    result, problems = interpolate(f"${{env:{name}}}", {})
    assert result is None
    assert problems == [f"environment variable {name} is not set (used as ${{env:{name}}})"]


@given(env_names, env_values)
def test_double_dollar_escapes(name: str, value: str) -> None:
    assert interpolate(f"$${{env:{name}}}", {name: value}) == (f"${{env:{name}}}", [])


def test_file_reference_strips_one_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cr3t-from-file\n\n")
    assert interpolate(f"${{file:{secret_file}}}", {}) == ("s3cr3t-from-file\n", [])
    assert is_secret(f"${{file:{secret_file}}}", {})


def test_missing_file_and_unknown_scheme_are_errors(tmp_path: Path) -> None:
    _, problems = interpolate(f"${{file:{tmp_path}/nope}}", {})
    assert problems and "cannot read" in problems[0] and "No such file" in problems[0]
    _, problems = interpolate("${vault:x}", {})
    assert problems and "unknown reference '${vault:x}'" in problems[0]


def test_default_written_in_the_file_is_not_secret() -> None:
    result, _ = interpolate("${env:NATSBRIDGE_TEST_NOPE:-visible-default-xyz}", {})
    assert result == "visible-default-xyz"
    assert not is_secret("${env:NATSBRIDGE_TEST_NOPE:-visible-default-xyz}", {})


def test_positions_are_one_based_and_paths_formatted() -> None:
    doc = parse_document("a:\n  - b: 1\n    c: 'q'\n", "t.yaml", {})
    assert doc.mark(("a", 0, "c")) == Mark(3, 5)
    assert doc.value_marks[("a", 0, "c")] == Mark(3, 9)  # after the opening quote
    assert format_path(("routes", 1, "to", "subject")) == "routes[1].to.subject"


def test_syntax_error_has_the_parser_position() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        parse_document("a: [1, 2\nb: 3\n", "t.yaml", {})
    assert info.value.mark is not None and info.value.mark.line == 2


def test_arbitrary_tags_are_refused() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        parse_document("a: !!python/object/apply:os.system ['true']\n", "t.yaml", {})
    assert "could not determine a constructor" in str(info.value)
