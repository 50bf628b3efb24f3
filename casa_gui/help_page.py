"""Help › What the numbers mean: a page of the app, from ``resources/help/numbers.md``, with the verdict's
thresholds filled in from the code that applies them."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

from casa_core.api import resource_dir, thresholds_table

PAGE = ("help", "numbers.md")


def numbers_markdown() -> str:
    text = resource_dir().joinpath(*PAGE).read_text(encoding="utf-8")
    return text.replace("{thresholds}", thresholds_table())


class NumbersDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("What the numbers mean")
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(False)
        self.browser.setMarkdown(numbers_markdown())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.browser, 1)
        lay.addWidget(buttons)
        self.resize(760, 620)
