"""The `buffer` setting: a mode name or a mapping, bridge-wide and per route; positioned errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.model import Buffer, BufferMode, effective_buffer
from natsbridge.bridge.errors import ConfigError

HEAD = (
    "version: 1\n"
    "bridge:\n"
    "  id: b\n"
    "  buffer: {bridge_buffer}\n"
    "connections:\n"
    "  cluster: {{kind: nats, servers: ['nats://127.0.0.1:4231']}}\n"
    "  rabbit: {{kind: amqp, url: 'amqp://guest:guest@127.0.0.1:5672/'}}\n"
    "routes:\n"
    "  - name: r\n"
    "    from: {{connection: cluster, subject: 'in.>'}}\n"
    "    to: {{connection: cluster, subject: out}}\n"
)


def config_text(bridge_buffer: str = "embedded", route_buffer: str | None = None) -> str:
    text = HEAD.format(bridge_buffer=bridge_buffer)
    return text if route_buffer is None else text + f"    buffer: {route_buffer}\n"


def load(tmp_path: Path, text: str) -> Buffer:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    [route] = load_config(path, {}).routes
    return route.buffer


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


def test_default_is_embedded(tmp_path: Path) -> None:
    buffer = load(tmp_path, config_text())
    assert buffer.mode is BufferMode.EMBEDDED and buffer.connection is None


def test_route_inherits_the_bridge_s_jetstream_and_overrides_what_it_writes(
    tmp_path: Path,
) -> None:
    text = config_text("{mode: jetstream, connection: cluster, replicas: 1}", "{max_msgs: 10}")
    buffer = load(tmp_path, text)
    assert (buffer.mode, buffer.connection, buffer.replicas) == ("jetstream", "cluster", 1)
    assert buffer.max_msgs == 10


def test_a_mode_name_on_a_route_switches_mode_and_drops_the_stream_settings(
    tmp_path: Path,
) -> None:
    text = config_text("{mode: jetstream, connection: cluster}", "embedded")
    buffer = load(tmp_path, text)
    assert buffer.mode is BufferMode.EMBEDDED and buffer.connection is None


def test_jetstream_without_a_connection_is_refused_where_written(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, config_text(route_buffer="jetstream"))
    assert problem.startswith("12:5: routes[0].buffer: mode jetstream needs `connection`")
    [problem] = problems(tmp_path, config_text("jetstream"))
    assert problem.startswith("4:3: bridge.buffer: mode jetstream needs `connection`")


def test_connection_must_be_a_nats_one_of_the_file(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, config_text("{mode: jetstream, connection: rabbit}"))
    assert problem == (
        "4:29: bridge.buffer.connection: a amqp connection cannot hold a buffer: "
        "expected a nats one"
    )
    [problem] = problems(tmp_path, config_text(route_buffer="{mode: jetstream, connection: nope}"))
    assert problem.startswith("12:31: routes[0].buffer.connection: unknown connection 'nope'")


def test_wrong_mode_and_misplaced_keys_are_one_line_each(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, config_text("jetstrem"))
    assert problem.startswith("4:3: bridge.buffer.mode: expected 'embedded', 'jetstream' or")
    [problem] = problems(tmp_path, config_text("{mode: embedded, replicas: 3}"))
    assert "bridge.buffer: replicas is a key of mode jetstream, not embedded" in problem
    too_many = config_text("{mode: jetstream, connection: cluster, replicas: 7}")
    [problem] = problems(tmp_path, too_many)
    assert "bridge.buffer.replicas: expected less than or equal to 5, found 7" in problem


modes = st.sampled_from(list(BufferMode))
limits = st.fixed_dictionaries({}, optional={"max_msgs": st.integers(1, 10**9)})


@given(default_mode=modes, written_mode=st.none() | modes, written=limits, own=limits)
def test_effective_buffer_takes_what_the_route_writes_and_the_rest_from_the_bridge(
    default_mode: BufferMode,
    written_mode: BufferMode | None,
    written: dict[str, int],
    own: dict[str, int],
) -> None:
    stream = {"connection": "c", "replicas": 1} if default_mode is BufferMode.JETSTREAM else {}
    default = Buffer.model_validate({"mode": default_mode, **stream, **own, "max_bytes": 99})
    mode = {} if written_mode is None else {"mode": written_mode}
    route = Buffer.model_validate({**mode, **written})
    result = effective_buffer(default, route)
    assert result.mode is (written_mode or default_mode)
    assert result.max_msgs == written.get("max_msgs", default.max_msgs)
    assert result.max_bytes == 99
    same_stream = result.mode is BufferMode.JETSTREAM and default_mode is BufferMode.JETSTREAM
    assert result.connection == ("c" if same_stream else None)
