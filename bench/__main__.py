"""`python -m bench NAME`: import `bench.NAME` and run its `main()` (prints one JSON object)."""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> int:
    """Run the benchmark named by argv[0]."""
    if len(argv) != 1:
        print("usage: python -m bench NAME", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    result: int = module.main()
    return result


raise SystemExit(main(sys.argv[1:]))
