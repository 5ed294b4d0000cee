"""``python -m kpt.abtest``: the same as the ``kpt-abtest`` command."""

from kpt.abtest._cli import main

raise SystemExit(main())
