"""``python -m edge``: the same command line as ``emotion-edge``."""

from edge.cli import main

raise SystemExit(main())
