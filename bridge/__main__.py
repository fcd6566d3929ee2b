"""`python -m bridge` is the `natsbridge` command."""

from bridge.cli import main

raise SystemExit(main())
