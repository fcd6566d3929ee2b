"""The out-of-tree example connector (examples/plugin) must be installed, and current.

deploy/dev/test.sh installs it with pip, as a user installs a third-party connector; a test
never installs anything. Without it a test module here skips, except under CI=true where it
fails (as a missing broker does: tests/conftest.py). An installed copy that differs from
examples/plugin counts as missing: the tests would prove other code than the tree's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, in_ci

PLUGIN = REPO_ROOT / "examples" / "plugin"
INSTALL = "pip install ./examples/plugin (deploy/dev/test.sh does)"


def problem() -> str | None:
    """Why the installed natsbridge_files cannot be tested, or None."""
    spec = importlib.util.find_spec("natsbridge_files")
    if spec is None or spec.origin is None:
        return f"the example connector natsbridge_files is not installed: {INSTALL}"
    installed = Path(spec.origin).parent
    for source in sorted((PLUGIN / "natsbridge_files").glob("*.py")):
        copy = installed / source.name
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            return f"the installed {installed} differs from {source.parent}: {INSTALL}"
    return None


def require() -> None:
    """At a test module's top: skip it (fail it under CI) unless the plugin is installed."""
    reason = problem()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
