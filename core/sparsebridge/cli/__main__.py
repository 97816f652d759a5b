"""``python -m sparsebridge.cli``: the command line, as the ``sparsebridge`` script runs it."""

import sys

from . import main

sys.exit(main())
