"""Frozen entry point of `casa-gui` (windowed on Windows)."""

import sys

from casa_gui.app import main

if __name__ == "__main__":
    sys.exit(main())
