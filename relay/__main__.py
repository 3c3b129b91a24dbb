import sys

from relay._cli import main

sys.exit(main())
