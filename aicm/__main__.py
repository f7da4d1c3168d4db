"""``python -m aicm``: the ``aicm`` command."""

from aicm.cli import main

raise SystemExit(main())
