"""Config fuzzing: any bytes in -> a valid config or positioned problems, never an exception.

`check()` is `natsbridge validate` in-process: load the file; a ConfigError's problems
must each name file:line:col. Time per example is bounded by hypothesis' deadline and
memory by tracemalloc; a few subprocess runs check the real exit codes and stderr.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsbridge.bridge.config import load_config
from natsbridge.bridge.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_LINES = (EXAMPLES / "rabbitmq-nats.yaml").read_text().splitlines()
POSITIONED = re.compile(r"^.+\.yaml:\d+:\d+: \S")
MEMORY_LIMIT = 256 * 1024**2  # peak bytes Python allocates for one file
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_VALUES = [
    "&a [*a]",
    "*nope",
    "[" * 40,
    "{" * 40 + "}" * 40,
    "- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - x",
    "!!python/object/apply:os.system ['true']",
    "!!binary '%%%'",
    "!!timestamp 2001-13-99",
    "!!set {a, b}",
    "!!omap [a: 1, a: 2]",
    "!custom x",
    "!!int 0x",
    "!!float x",
    ".inf",
    "-.nan",
    "1e400",
    "9" * 5000,
    "${file:/dev/zero}",
    "${file:/dev/stdin}",
    "${file:/proc/self/environ}",
    "${file:}",
    "${file:/nonexistent}",
    "${env:}",
    "${env:PW}",
    "${env:PW}${env:PW}",
    "${env:NOPE:-}",
    "$${env:PW}",
    "${vault:x}",
    "${",
    "? [a, b]\n: c",
    "{[a]: b}",
    "<<: *nope",
    "<<: 5",
    "'" + "y" * 10_000 + "'",
    '"\\ud800"',
    "---\n---",
    "...",
    "%YAML 1.1\n---",
    "\t",
    "\ufeff",
    "\u0085",
    "é\u2028",
]
PW_VALUES = st.sampled_from(["", "a", "pw", "admin", "a\\b\"c'd", "x" * 300, "${env:PW}"])


def check(data: bytes, environ: dict[str, str]) -> None:
    """Load `data` as a config file: success or positioned problems, in bounded memory."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bridge.yaml"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            load_config(path, environ)
        except ConfigError as exc:
            assert exc.problems
            for problem in exc.problems:
                assert POSITIONED.match(problem), problem
                assert len(problem) < 2000
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT


def laughs(levels: int, breadth: int) -> str:
    lines = ["l0: &l0 [lol, lol]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * breadth)}]")
    return "\n".join(lines)


@st.composite
def hostile_yaml(draw: st.DrawFn) -> bytes:
    """The example config with hostile values, keys, lines and bytes spliced in."""
    lines = list(EXAMPLE_LINES)
    # Mostly one or two values in real places, so that many examples still parse.
    for _ in range(draw(st.integers(1, 3))):
        fragment = draw(
            st.sampled_from(HOSTILE_VALUES)
            | st.sampled_from(HOSTILE_VALUES)
            | st.builds(laughs, st.integers(2, 30), st.integers(1, 12))
            | st.text(max_size=30)
        )
        index = draw(st.integers(0, len(lines) - 1))
        key, sep, _ = lines[index].partition(": ")
        if sep and draw(st.integers(0, 3)):
            lines[index] = f"{key}: {fragment}"  # a hostile value in a real place
        else:
            lines.insert(index, fragment)
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if not draw(st.integers(0, 3)):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data


EXAMPLE_DATA = yaml.safe_load((EXAMPLES / "rabbitmq-nats.yaml").read_text())
VOCABULARY = sorted(
    {"version", "bridge", "connections", "routes", "kind", "from", "to", "connection"}
    | {"name", "subject", "jetstream", "stream", "durable", "url", "servers", "delivery"}
    | {"amqp", "kafka", "stomp", "nats", "rabbit", "password", "token", "retry", "admin"}
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(VOCABULARY)
    | st.sampled_from(["${env:PW}", "${file:/dev/zero}", "5s", ".inf", "a.b", "nats://u:p@h"])
)
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(VOCABULARY) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated_example(draw: st.DrawFn) -> bytes:
    """The example's data with values of any type put in its sections, keys and lists."""
    data = copy.deepcopy(EXAMPLE_DATA)
    for _ in range(draw(st.integers(1, 3))):
        parent: Any = data
        while True:
            keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = parent[key]
            if not isinstance(child, dict | list) or draw(st.booleans()):
                parent[key] = draw(trees)
                break
            parent = child
    return yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass")


@FUZZ
@given(mutated_example(), PW_VALUES)
def test_config_shaped_values_of_any_type(data: bytes, password: str) -> None:
    check(data, {"PW": password})


@FUZZ
@given(st.binary(max_size=4096), PW_VALUES)
def test_any_bytes(data: bytes, password: str) -> None:
    check(data, {"PW": password})


@FUZZ
@given(hostile_yaml(), PW_VALUES)
def test_structured_hostile_yaml(data: bytes, password: str) -> None:
    check(data, {"PW": password})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xff\xfe\x00\x00",
        b"[" * 100_000,
        b"&a [*a, *a]",
        laughs(40, 10).encode(),
        b"version: 1\n" + b"x: \xed\xa0\x80\n",
        (EXAMPLES / "rabbitmq-nats.yaml").read_bytes(),
    ],
    ids=["empty", "nul", "utf-32", "brackets", "self-alias", "laughs", "surrogate", "example"],
)
def test_validate_exits_0_or_1_without_a_traceback(tmp_path: Path, data: bytes) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "natsbridge", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 1:
        *problems, summary = result.stderr.splitlines()
        assert problems and all(POSITIONED.match(p) for p in problems), result.stderr
        assert summary.endswith("found")
