"""``python -m benchmarks.loadgen``: see the package's docstring."""

import sys

from benchmarks.loadgen import main

sys.exit(main())
