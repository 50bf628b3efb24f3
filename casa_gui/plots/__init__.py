"""Views of one layer (routing heatmaps, cluster map, spectra, risk) drawn with pyqtgraph."""
