"""`python -m menagerie ...`: the `menagerie` command without the installed script (menagerie.cli)."""

from menagerie.cli import main

raise SystemExit(main())
