"""`python -m kpt.sim serve | profiles | replay`."""

import sys

from kpt.sim._cli import main

if __name__ == "__main__":
    sys.exit(main())
