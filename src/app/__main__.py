"""`python -m app`: the `dagnats-bridge` command (how app.workers starts its workers)."""

from app.cli import main

raise SystemExit(main())
