"""`python -m dler ...` is the `dler` command."""

import sys

from dler.cli import main

sys.exit(main())
