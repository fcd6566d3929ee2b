"""`python -m natsbridge` is the `natsbridge` command."""

from natsbridge.bridge.cli import main

raise SystemExit(main())
