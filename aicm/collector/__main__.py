"""``python -m aicm.collector``: run the local collector."""

from aicm.collector import main

raise SystemExit(main())
