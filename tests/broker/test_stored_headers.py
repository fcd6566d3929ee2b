"""The stored form of headers: every header map comes back exactly as it was written."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.broker.store import decode_headers, encode_headers

texts = st.text(max_size=8) | st.text("a:\x1f\x00\r\n é", max_size=4)
headers_maps = st.dictionaries(texts, st.lists(texts, max_size=3))


@given(headers_maps)
def test_headers_round_trip(headers: dict[str, list[str]]) -> None:
    assert decode_headers(encode_headers(headers)) == headers


def test_usual_headers_are_stored_as_separated_pairs() -> None:
    stored = encode_headers({"A": ["1", "2"], "B": ["x:y\r\n"]})
    assert stored == "\x1fA\x1f1\x1fA\x1f2\x1fB\x1fx:y\r\n"


def test_a_separator_a_nul_or_a_name_without_values_is_stored_as_json() -> None:
    odd = ({"A": ["sep\x1finside"]}, {"sep\x1fname": ["1"]}, {"A": ["nul\x00"]}, {"A": []})
    for headers in odd:
        stored = encode_headers(headers)
        assert stored is not None and json.loads(stored) == headers


def test_json_written_by_earlier_versions_still_reads() -> None:
    assert decode_headers('{"A":["1","2"],"B":[]}') == {"A": ["1", "2"], "B": []}
    assert decode_headers(None) == {} and encode_headers({}) is None
