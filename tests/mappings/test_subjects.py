"""Subject grammar, matching, and the Sublist trie checked against the naive matcher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsbridge.bridge.errors import SubjectError
from natsbridge.mappings.subjects import (
    MAX_SUBJECT_BYTES,
    Sublist,
    count_wildcards,
    is_valid_pattern,
    is_valid_subject,
    match,
    validate_pattern,
    validate_subject,
)

GOOD_SUBJECTS = ["a", "orders.eu.created", "a*b.>c", "$JS.API", "café.ü", "100%", "a:b/c"]
BAD_SUBJECTS = {
    "": "empty subject",
    "orders..created": "empty token at position 2 in subject 'orders..created'",
    ".a": "empty token at position 1",
    "a.": "empty token at position 2",
    "a b": "whitespace ' ' (U+0020) at offset 1",
    "a\tb": "whitespace '\\t' (U+0009) at offset 1",
    "a\x00b": "character '\\x00' (U+0000) at offset 1",
    "a.*": "wildcard '*' at position 2 in 'a.*'",
    ">": "wildcard '>' at position 1",
    "a" * (MAX_SUBJECT_BYTES + 1): "over the 4096-byte limit",
}


@pytest.mark.parametrize("subject", GOOD_SUBJECTS)
def test_valid_subjects(subject: str) -> None:
    validate_subject(subject)
    validate_pattern(subject)
    assert is_valid_subject(subject)


@pytest.mark.parametrize(("subject", "message"), BAD_SUBJECTS.items())
def test_invalid_subjects_say_what_and_where(subject: str, message: str) -> None:
    with pytest.raises(SubjectError) as info:
        validate_subject(subject)
    assert message in str(info.value)
    assert not is_valid_subject(subject)


def test_patterns() -> None:
    for good in ["*", ">", "a.*.c", "a.>", "*.*.>", "a*.b>"]:
        validate_pattern(good)
    with pytest.raises(SubjectError, match=r"'>' must be the last token in 'foo.>.bar'"):
        validate_pattern("foo.>.bar")
    with pytest.raises(SubjectError, match="empty token at position 3"):
        validate_pattern("a.*..b")
    assert count_wildcards("a.*.b.*.>") == 2


@pytest.mark.parametrize(
    ("pattern", "subject", "captures"),
    [
        ("a.b", "a.b", ()),
        ("a.*", "a.b", ("b",)),
        ("*.b.*", "x.b.y", ("x", "y")),
        ("a.>", "a.b.c", ("b.c",)),
        ("*.>", "a.b.c", ("a", "b.c")),
        (">", "a", ("a",)),
        ("a.>", "a", None),
        ("a.*", "a.b.c", None),
        ("a.*", "a", None),
        ("a.b", "a.c", None),
        ("a*", "ab", None),
    ],
)
def test_match(pattern: str, subject: str, captures: tuple[str, ...] | None) -> None:
    assert match(pattern, subject) == captures


def test_sublist_insert_match_and_removal() -> None:
    sl: Sublist[str] = Sublist()
    sl.insert("orders.*", "s1")
    sl.insert("orders.>", "s2")
    sl.insert("orders.eu", "s3")
    sl.insert("orders.*", "s1")  # no-op
    assert len(sl) == 3
    result = sl.match("orders.eu")
    assert set(result) == {"s1", "s2", "s3"}
    assert sl.match("orders.eu") is result  # cached
    assert sl.remove("orders.*", "s1")
    assert not sl.remove("orders.*", "s1")
    assert not sl.remove("nope.x", "s2")
    assert set(sl.match("orders.eu")) == {"s2", "s3"}
    assert sl.match("orders.eu.x") == ("s2",)
    with pytest.raises(SubjectError):
        sl.insert("a..b", "bad")


# --- property tests: the trie agrees with the naive matcher --------------------------

token = st.sampled_from(["a", "b", "c", "ab"])
subject_st = st.lists(token, min_size=1, max_size=5).map(".".join)


@st.composite
def pattern_st(draw: st.DrawFn) -> str:
    toks = draw(st.lists(st.sampled_from(["a", "b", "c", "*"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        toks.append(">")
    return ".".join(toks)


@settings(max_examples=300)
@given(
    st.lists(pattern_st(), max_size=12),
    st.lists(subject_st, min_size=1, max_size=8),
    st.data(),
)
def test_sublist_matches_naive(patterns: list[str], probes: list[str], data: st.DataObject) -> None:
    sl: Sublist[int] = Sublist(cache_size=4)
    registered = set(enumerate(patterns))
    for n, pattern in registered:
        sl.insert(pattern, n)
    # Remove a random subset, interleaved with matches so the cache is exercised.
    for n, pattern in sorted(registered):
        sl.match(probes[0])
        if data.draw(st.booleans()):
            assert sl.remove(pattern, n)
            registered.discard((n, pattern))
    assert len(sl) == len(registered)
    for subject in probes:
        result = sl.match(subject)
        want = {n for n, p in registered if match(p, subject) is not None}
        assert set(result) == want
        assert len(result) == len(want)


@given(st.text(max_size=30))
def test_validate_agrees_with_is_valid(text: str) -> None:
    try:
        validate_subject(text)
        ok = True
    except SubjectError:
        ok = False
    assert ok == is_valid_subject(text)
    try:
        validate_pattern(text)
        ok = True
    except SubjectError:
        ok = False
    assert ok == is_valid_pattern(text)


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=5))
def test_validity_matches_the_token_rules(toks: list[str]) -> None:
    subject = ".".join(toks)
    parts = subject.split(".")
    expected = all(
        part != ""
        and part not in ("*", ">")
        and not any(ord(c) <= 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in part)
        for part in parts
    )
    assert is_valid_subject(subject) == expected


@given(pattern_st(), subject_st)
def test_match_captures_rebuild_the_subject(pattern: str, subject: str) -> None:
    captures = match(pattern, subject)
    if captures is None:
        return
    it = iter(captures)
    rebuilt = [next(it) if t in ("*", ">") else t for t in pattern.split(".")]
    assert ".".join(rebuilt) == subject
