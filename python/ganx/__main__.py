"""`python -m ganx` = the `ganx` command."""
import sys

from ganx.cli import main

sys.exit(main())
