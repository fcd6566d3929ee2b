"""docs/connectors.md walks through the example connector: its excerpts are the real code."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "connectors.md"
EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```\w*\n(.*?)```", re.DOTALL)


def excerpts() -> list[tuple[str, str]]:
    return EXCERPT.findall(PAGE.read_text())


def test_the_page_quotes_the_example() -> None:
    files = {path for path, _ in excerpts()}
    assert {
        "examples/plugin/pyproject.toml",
        "examples/plugin/natsbridge_files/__init__.py",
        "examples/plugin/natsbridge_files/config.py",
        "examples/plugin/natsbridge_files/spool.py",
        "examples/plugin/natsbridge_files/source.py",
        "examples/plugin/natsbridge_files/sink.py",
    } <= files


@pytest.mark.parametrize(("path", "code"), excerpts())
def test_each_excerpt_is_in_its_file_as_written(path: str, code: str) -> None:
    assert code in (REPO_ROOT / path).read_text(), f"docs/connectors.md quotes {path} wrongly"
