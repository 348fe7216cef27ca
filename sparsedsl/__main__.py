"""``python -m sparsedsl``: the ``sparsedsl`` command (REPL, run, tour, bench)."""

import sys

from .cli import main

sys.exit(main())
