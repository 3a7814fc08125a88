"""``python -m ecgml.cli ...``: the same as the ``ecgml`` console script."""

import sys

from ecgml.cli import main

sys.exit(main())
