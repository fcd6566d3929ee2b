"""`natsbridge migrate verify`: the answers that need no broker (usage and names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsbridge.bridge.cli import main


def test_an_unknown_migration_is_one_line_with_a_suggestion(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "verify", "order", "-c", str(config_file)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "natsbridge: no migration named 'order' — did you mean 'orders'? (defined: orders, clicks)"
    ]


@pytest.mark.parametrize("window", ["0", "-5m", "10x", "9999h", ""])
def test_a_window_that_is_not_a_duration_is_a_usage_error(
    config_file: Path, window: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "verify", "orders", "-c", str(config_file), f"--window={window}"])
    assert stopped.value.code == 2
    assert "expected a duration such as 90s, 10m or 1h" in capsys.readouterr().err


@pytest.mark.parametrize(("window", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0)])
def test_the_window_takes_seconds_or_a_duration(window: str, seconds: float) -> None:
    from natsbridge.bridge.migrate.verify_cli import _window

    assert _window(window) == seconds
