"""Hostile config files (issue 14, case 8): each ends as positioned problems, never a hang."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.source import MAX_CONFIG_BYTES, MAX_FILE_REFERENCE_BYTES
from natsbridge.bridge.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RABBIT = (EXAMPLES / "rabbitmq-nats.yaml").read_text()
POSITIONED = re.compile(r"^.+:\d+:\d+: ")


def problems_of(path: Path, data: bytes) -> list[str]:
    """Load `data` as the config at `path`, expected to fail; return its problems."""
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return info.value.problems


def edited(old: str, new: str) -> bytes:
    assert old in RABBIT, old
    return RABBIT.replace(old, new, 1).encode()


def billion_laughs() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[level]
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    return ("\n".join(lines) + "\n").encode()


def alias_chain(levels: int = 100) -> bytes:
    text = "a0: &a0 [x, x]\n"
    text += "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, levels))
    return text.encode()


def merge_chain(levels: int = 60) -> bytes:
    text = "m0: &m0 {k: v}\n"
    text += "".join(
        f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}\n" for i in range(1, levels)
    )
    return text.encode()


def guarded_validate(config: Path) -> subprocess.CompletedProcess[str]:
    """`natsbridge validate` with 1 GiB of address space and 60 s of CPU at most."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))

    return subprocess.run(
        [sys.executable, "-m", "natsbridge", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limits,
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (billion_laughs(), "values after expanding aliases"),
        (alias_chain(), "values after expanding aliases"),
        (b"[" * 2000, "nested deeper than 32 levels"),
        (b"a:\n" + b"- " * 2000 + b"x\n", "nested deeper than 32 levels"),
        (b"x: &a [*a]\n", "nested deeper than 32 levels"),
    ],
    ids=["billion-laughs", "alias-chain", "2000-brackets", "2000-dashes", "self-alias"],
)
def test_bombs_and_depth_end_as_one_positioned_problem(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_bytes(data)
    result = guarded_validate(config)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [problem, summary] = result.stderr.splitlines()
    assert POSITIONED.match(problem) and expected in problem
    assert summary == "1 problem found"


def test_merge_keys_cannot_expand_without_bound(tmp_path: Path) -> None:
    config = tmp_path / "merge.yaml"
    config.write_bytes(merge_chain())
    result = guarded_validate(config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert all(POSITIONED.match(line) for line in result.stderr.splitlines()[:-1])


def test_too_many_values_without_aliases(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "flat.yaml", b"a: [" + b"1," * 100_001 + b"1]\n")
    assert POSITIONED.match(problem) and "more than 100000 values" in problem


@pytest.mark.parametrize(
    ("data", "where", "expected"),
    [
        (b"version: 1\nbridge: {id: caf\xe9}\n", ":2:17: ", "byte 0xe9 is not UTF-8"),
        ("version: 1\n".encode("utf-16"), ":1:1: ", "UTF-16"),
        ("version: 1\n".encode("utf-16-be"), ":1:1: ", "control character U+0000"),
        (b"version: 1\nbridge:\n  id: a\x00b\n", ":3:8: ", "control character U+0000"),
        (b"version: 1\nbridge: {id: a\x1bb}\n", ":2:15: ", "control character U+001B"),
        (b"version: \xef\xbf\xbe\n", ":1:10: ", "control character U+FFFE"),
    ],
    ids=["latin-1", "utf-16-bom", "utf-16-no-bom", "nul", "escape", "non-character"],
)
def test_text_that_is_not_utf8_yaml_is_a_positioned_problem(
    tmp_path: Path, data: bytes, where: str, expected: str
) -> None:
    [problem] = problems_of(tmp_path / "bridge.yaml", data)
    assert f"bridge.yaml{where}invalid text: " in problem and expected in problem


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + RABBIT.encode())
    assert load_config(path, {}).bridge.id == "example-dc1"


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    data = b"version: " + b"x" * MAX_CONFIG_BYTES + b"\n"
    [problem] = problems_of(tmp_path / "big.yaml", data)
    assert problem.endswith(
        f"cannot read config: larger than the limit of {MAX_CONFIG_BYTES} bytes"
    )


def test_long_found_values_are_cut_in_errors(tmp_path: Path) -> None:
    long = "x" * 500_000
    problems = problems_of(
        tmp_path / "long.yaml", edited("delivery: at_most_once", f"delivery: {long}")
    )
    [problem] = [p for p in problems if "routes[2].delivery" in p]
    assert len(problem) < 1000 and "(500002 characters)" in problem


def test_a_long_unknown_key_is_cut(tmp_path: Path) -> None:
    key = "k" * 1000  # YAML's longest simple key is 1024 characters
    [problem] = problems_of(tmp_path / "key.yaml", edited("exchange: orders", f"{key}: orders"))
    assert "routes[0].from.kkk" in problem and "(1000 characters)" in problem
    assert len(problem) < 700


@pytest.mark.parametrize(
    "value",
    [
        "!!timestamp 2001-13-99",
        "!!int 0x",
        "1" * 5000,
        "!!float nope",
        "!!binary '%%%'",
        "!!set {a, b}",
        "!!python/name:os.system",
    ],
)
def test_values_a_tag_cannot_hold_are_positioned(tmp_path: Path, value: str) -> None:
    problems = problems_of(
        tmp_path / "tag.yaml", edited("delivery: at_most_once", f"delivery: {value}")
    )
    assert all(POSITIONED.match(p) for p in problems)
    assert any(":57:" in p for p in problems), problems


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (".inf", "finite"),
        ("-.inf", "finite"),
        (".nan", "finite"),
        ("1.0e+300", "one week"),
        ("-1", "greater than 0"),
        ("8d", "expected a duration"),
        ("999999999999999999999999s", "expected a duration"),
        ("700000s", "one week"),
    ],
)
def test_durations_are_finite_and_bounded(tmp_path: Path, value: str, expected: str) -> None:
    [problem] = problems_of(tmp_path / "d.yaml", edited("timeout: 5s", f"timeout: {value}"))
    assert ":56:7: routes[2].request_reply.timeout: " in problem and expected in problem


def test_retry_multiplier_is_finite(tmp_path: Path) -> None:
    text = edited(
        "    delivery: at_most_once", "    delivery: at_most_once\n    retry: {multiplier: .inf}"
    )
    [problem] = problems_of(tmp_path / "r.yaml", text)
    assert "routes[2].retry.multiplier" in problem and "finite" in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-1", "from 0 to"), ("2TiB", "expected a size"), ("1e3", "expected a size")],
)
def test_sizes_are_bounded(tmp_path: Path, value: str, expected: str) -> None:
    text = edited(
        "    delivery: at_most_once", f"    delivery: at_most_once\n    max_payload: {value}"
    )
    [problem] = problems_of(tmp_path / "s.yaml", text)
    assert "routes[2].max_payload" in problem and expected in problem


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "directory", "too-large", "latin-1"])
def test_file_reference_reads_small_regular_text_files_only(tmp_path: Path, special: str) -> None:
    target = tmp_path / special
    match special:
        case "fifo":
            os.mkfifo(target)  # nobody writes: reading it would block forever
        case "/dev/zero":
            target = Path("/dev/zero")
        case "directory":
            target.mkdir()
        case "too-large":
            target.write_bytes(b"x" * (MAX_FILE_REFERENCE_BYTES + 1))
        case "latin-1":
            target.write_bytes(b"caf\xe9")
    text = edited("stream: ORDERS", f"stream: ${{file:{target}}}")
    [problem] = problems_of(tmp_path / "f.yaml", text)
    assert ":28:17: routes[0].to.jetstream.stream: cannot read" in problem
    reason = {
        "fifo": "not a regular file (a FIFO)",
        "/dev/zero": "not a regular file (a device)",
        "directory": "not a regular file (a directory)",
        "too-large": f"larger than the limit of {MAX_FILE_REFERENCE_BYTES} bytes",
        "latin-1": "not UTF-8 text",
    }[special]
    assert problem.endswith(reason)


def test_config_path_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(fifo, {})
    assert info.value.problems == [f"{fifo}: cannot read config: not a regular file (a FIFO)"]


@pytest.mark.parametrize(
    "name", ["OR.DERS", "OR DERS", "ORD*", "ORD>", "a/b", "a\\\\b", "x" * 256, "tab\\tx"]
)
@pytest.mark.parametrize("field", ["source-stream", "durable", "sink-stream"])
def test_jetstream_names_follow_the_servers_rules(tmp_path: Path, name: str, field: str) -> None:
    value = f'"{name}"'
    if field == "sink-stream":
        text, where = edited("stream: ORDERS", f"stream: {value}"), "routes[0].to.jetstream.stream"
    else:
        text = edited(
            'subject: "pricing.quote"',
            'subject: "pricing.quote"\n      jetstream: {stream: '
            + ("PRICING" if field == "durable" else value)
            + (f", durable: {value}" if field == "durable" else "")
            + "}",
        )
        where = f"routes[2].from.jetstream.{'durable' if field == 'durable' else 'stream'}"
    problems = problems_of(tmp_path / "js.yaml", text)
    assert any(where in p and "JetStream name" in p for p in problems), problems


def test_route_name_with_a_dot_needs_an_explicit_durable(tmp_path: Path) -> None:
    text = edited(
        'subject: "pricing.quote"', 'subject: "pricing.quote"\n      jetstream: {stream: PRICING}'
    ).decode()
    text = text.replace("name: pricing-rpc", "name: pricing.rpc")
    problems = problems_of(tmp_path / "js.yaml", text.encode())
    assert any(
        "routes[2].name: the default durable 'natsbridge-pricing.rpc'" in p for p in problems
    )


def test_amqp_and_kafka_names_follow_their_brokers_rules(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path / "a.yaml", edited("exchange: orders", "exchange: " + "é" * 128)
    )
    assert "routes[0].from.exchange: expected at most 255 bytes" in problem
    kafka = (EXAMPLES / "kafka-nats.yaml").read_text()
    assert "topic: telemetry" in kafka
    for bad in ("tele/metry", "'..'", "x" * 250):
        [problem] = problems_of(
            tmp_path / "k.yaml", kafka.replace("topic: telemetry", f"topic: {bad}").encode()
        )
        assert "routes[1].to.topic: expected a Kafka topic name" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nbridge: {id: a}\nconnections: 5\n"
            "routes:\n  - {name: r, from: {connection: x}, to: {connection: y}}\n",
            ":3:1: connections: expected a mapping of named connections, found 5",
        ),
        (
            RABBIT.replace("  id: example-dc1", "  '': null", 1),
            ":6:3: bridge.: unknown key ''",
        ),
    ],
    ids=["connections-is-a-number", "empty-key"],
)
def test_sections_of_the_wrong_shape_are_problems(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path / "shape.yaml", text.encode())
    assert any(expected in p for p in problems), problems
    assert all(POSITIONED.match(p) for p in problems)
