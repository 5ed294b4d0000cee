"""`python -m kpt.hal devices|doctor`: the same as the `kpt` command."""

import sys

from kpt.hal._cli import main

sys.exit(main())
