"""`python -m bench NAME [ARGS...]`: run `bench.NAME.main(ARGS)` (prints one JSON object).

Every benchmark module has `main(argv: Sequence[str]) -> int` and runs the same way as
`python -m bench.NAME [ARGS...]`.
"""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> int:
    """Run the benchmark named by argv[0]."""
    if not argv:
        print("usage: python -m bench NAME [ARGS...]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    result: int = module.main(argv[1:])
    return result


raise SystemExit(main(sys.argv[1:]))
