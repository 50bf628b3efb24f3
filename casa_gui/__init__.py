"""CASA Studio desktop app (PySide6 + pyqtgraph) over casa_core."""
