"""Frozen entry point of the `casa` command (console)."""

import sys

from casa_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
