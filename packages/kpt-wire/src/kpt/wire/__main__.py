import sys

from kpt.wire._cli import main

sys.exit(main())
