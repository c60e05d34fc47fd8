"""``python -m simsock.bench``: run the benchmarks."""

import sys

from .runner import main

sys.exit(main())
