"""The version guard of a connector's driver seam (connectors/<kind>/driver.py).

A connector that reaches into its driver's private internals was tested against a range
of that driver's versions; its driver.py calls `require()` at import, so that another
version fails at once with a message naming both, not later in a way nobody can place.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

from natsbridge.bridge.errors import PermanentError


class DriverVersionError(PermanentError):
    """The installed driver is not a version the connector was tested with."""


def release(text: str) -> tuple[int, ...]:
    """The numeric release of a version string: "3.0.12" -> (3, 0, 12), "9.0.0rc1" -> (9, 0, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def require(
    distribution: str,
    minimum: tuple[int, ...],
    below: tuple[int, ...],
    installed: str | None = None,
) -> str:
    """The installed version of `distribution`; DriverVersionError unless minimum <= it < below."""
    if installed is None:
        try:
            installed = version(distribution)
        except PackageNotFoundError:
            raise DriverVersionError(f"the driver {distribution} is not installed") from None
    tested = f">={'.'.join(map(str, minimum))},<{'.'.join(map(str, below))}"
    if not minimum <= release(installed) < below:
        raise DriverVersionError(
            f"{distribution} {installed} is installed, but natsbridge was tested with "
            f"{distribution}{tested}: install a tested version (pip install "
            f"'{distribution}{tested}')"
        )
    return installed
