"""`python -m ddrm_helpers ...`: see ddrm_helpers/cli.py."""

import sys

from .cli import main

sys.exit(main())
