"""Allow ``python -m ropekit``."""

from ropekit.cli import main

raise SystemExit(main())
