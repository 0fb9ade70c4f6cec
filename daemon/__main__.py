"""`python -m tunewatch.daemon` is the `tunewatch` command."""

from tunewatch.daemon.cli import main

raise SystemExit(main())
