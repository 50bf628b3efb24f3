"""The view tabs: routing, clusters, spectra and risk of the selected layer, and the model overview."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtWidgets import QTabWidget

from .overview import OverviewView
from .plots.clusters import ClusterView
from .plots.compare import CompareView
from .plots.heatmap import HeatmapView
from .plots.rank import RankView
from .plots.risk import RiskView
from .plots.spectra import SpectraView

log = logging.getLogger("casa_gui")

TABS = (("routing", "Routing"), ("clusters", "Clusters"), ("spectra", "Spectra"), ("risk", "Risk"),
        ("rank", "Rank"), ("overview", "Overview"), ("compare", "Compare"))
LAYER_PAGES = ("routing", "clusters", "spectra", "risk", "rank")


class ViewTabs(QTabWidget):
    """Follows the selected layer (``show_layer``) and the overview figures; a bar click selects a layer."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.heatmap = HeatmapView()
        self.clusters = ClusterView()
        self.spectra = SpectraView()
        self.risk = RiskView()
        self.overview = OverviewView()
        self.rank = RankView()
        self.compare = CompareView()
        self.pages = {"routing": self.heatmap, "clusters": self.clusters, "spectra": self.spectra,
                      "risk": self.risk, "rank": self.rank, "overview": self.overview, "compare": self.compare}
        for key, label in TABS:
            self.addTab(self.pages[key], label)
        self.overview.layer_clicked.connect(state.select)
        state.selected_changed.connect(self.overview.select)
        state.selected_changed.connect(self.compare.set_selected)

    def show_layer(self, info) -> None:
        """Draw the selected layer (a controller.LayerInfo) on every layer page."""
        for key in LAYER_PAGES:
            self.pages[key].set_result(info.result)

    def show_overview(self, data) -> None:
        modules, results, drift, positions = data
        self.overview.set_data(modules, results, drift, self.state.selected, positions)
        self.rank.set_results([results[m] for m in modules if m in results])

    def show_compared(self, data) -> None:
        modules, compared = data
        self.compare.set_compared(modules, compared)
        self.compare.set_selected(self.state.selected)

    def restyle(self) -> None:
        for page in self.pages.values():
            page.restyle()

    def export_plots(self, folder) -> list[Path]:
        """Write each view of the selected layer (and the overview) as PNG into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = (self.state.selected or "model").replace("/", "_")
        out = []
        for key, page in self.pages.items():
            if page.showing_view and getattr(page, "has_figures", True):
                name = "overview" if key == "overview" else f"{stem}-{key}"
                out.append(page.export_png(folder / f"{name}.png"))
        log.info("wrote %d plots to %s", len(out), folder)
        return out

    def export_current_view(self, folder, modules: list[str], results: dict, progress=None) -> list[Path]:
        """The current layer page's view of each of ``modules`` as ``<module>-<page>.png`` in ``folder``.

        ``progress(i, n)`` is called after each and may return False to stop. The selected layer is
        drawn again at the end.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        key = next((k for k, p in self.pages.items() if p is self.currentWidget()), "routing")
        if key not in LAYER_PAGES:
            key = "routing"
        page = self.pages[key]
        shown = page.result
        out = []
        try:
            for i, m in enumerate(modules):
                res = results.get(m)
                if res is not None:
                    page.set_result(res)
                    if page.showing_view:
                        out.append(page.export_png(folder / f"{m.replace('/', '_')}-{key}.png"))
                if progress is not None and progress(i + 1, len(modules)) is False:
                    break
        finally:
            page.set_result(shown)
        log.info("wrote the %s view of %d layers to %s", key, len(out), folder)
        return out

    def restore_layout(self, qs) -> None:
        tab = qs.value("tab")
        if tab is not None:
            self.setCurrentIndex(int(tab))

    def save_layout(self, qs) -> None:
        qs.setValue("tab", self.currentIndex())
