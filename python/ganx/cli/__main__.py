"""`python -m ganx.cli` = the `ganx` command (as `python -m ganx`)."""
import sys

from ganx.cli import main

sys.exit(main())
