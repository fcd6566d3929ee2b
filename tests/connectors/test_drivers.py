"""The driver seams (connectors/<kind>/driver.py) refuse driver versions never tested."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from natsbridge.bridge import drivers
from natsbridge.bridge.drivers import DriverVersionError, release, require

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("amqp", "kafka", "stomp", "nats")


def driver(kind: str) -> ModuleType:
    return importlib.import_module(f"natsbridge.connectors.{kind}.driver")


def fresh_import(kind: str) -> ModuleType:
    """Run connectors/<kind>/driver.py again as a new module (the installed one stays)."""
    name = f"_seam_test_{kind}_driver"
    spec = importlib.util.spec_from_file_location(name, ROOT / "connectors" / kind / "driver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@pytest.mark.parametrize("kind", KINDS)
def test_the_installed_driver_is_in_the_tested_range(kind: str) -> None:
    module = fresh_import(kind)
    minimum, below = module.TESTED
    assert minimum <= release(module.VERSION) < below


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("untested", ["0.9", "99.0.1"])
def test_an_untested_driver_fails_the_import_naming_both_versions(
    kind: str, untested: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    distribution = driver(kind).DISTRIBUTION
    monkeypatch.setattr(drivers, "version", lambda name: untested)
    with pytest.raises(DriverVersionError) as raised:
        fresh_import(kind)
    message = str(raised.value)
    minimum, below = driver(kind).TESTED
    tested = f">={'.'.join(map(str, minimum))},<{'.'.join(map(str, below))}"
    assert f"{distribution} {untested} is installed" in message
    assert f"{distribution}{tested}" in message


def test_require_takes_the_lower_bound_and_refuses_the_upper() -> None:
    assert require("pika", (1, 3), (1, 5), installed="1.3.0") == "1.3.0"
    assert require("pika", (1, 3), (1, 5), installed="1.4.99rc1") == "1.4.99rc1"
    with pytest.raises(DriverVersionError, match=r"pika 1\.5 is installed"):
        require("pika", (1, 3), (1, 5), installed="1.5")
    with pytest.raises(DriverVersionError, match="not installed"):
        require("no-such-driver-natsbridge", (1,), (2,))


@pytest.mark.parametrize("kind", KINDS)
def test_pyproject_pins_the_tested_range(kind: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    module = driver(kind)
    minimum, below = module.TESTED
    tested = f">={'.'.join(map(str, minimum))},<{'.'.join(map(str, below))}"
    pins = {
        re.sub(r"\s|;.*", "", requirement)
        for requirement in requirements
        if re.match(rf"{re.escape(module.DISTRIBUTION)}\s*[<>=]", requirement)
    }
    assert pins == {module.DISTRIBUTION + tested}
