"""The public API of casa_core: all the GUI (and any other front end) may import.

An import-linter contract keeps ``casa_gui`` to this module (and the package's
``__version__``); everything else in casa_core may change shape freely.
"""

from __future__ import annotations

from . import __version__, methods, ranks
from .batch import Batch, BatchSpec, BatchSummary, LoraSpec, OutputEntry, TargetSpec, expand_loras
from .batch import Progress as BatchProgress
from .compute import Compute, resolve_device
from .conversion import Conversion
from .distillation import WeightedLora, parse_weighted
from .errors import Cancelled, CasaError, OutOfMemory
from .export import ExportInfo
from .layers import LayerResult
from .methods import MethodParams, ParamInfo, TransferMethod
from .models import expert_choices
from .ranks import AutoRank
from .report import Comparison, RunReport, model_figures
from .resources import demo_inputs, method_doc, resource_dir
from .settings import DTYPES, FORMATS, PRECISIONS, RunOptions, TransferSettings, parse_rank
from .verdict import THRESHOLDS, Verdict, layer_verdict, model_verdict, thresholds_table
from .views import LayerViews

__all__ = [
    "Batch", "BatchProgress", "BatchSpec", "BatchSummary", "LoraSpec", "OutputEntry", "TargetSpec", "expand_loras",
    "DTYPES", "FORMATS", "PRECISIONS", "THRESHOLDS", "AutoRank", "Cancelled", "CasaError", "Comparison", "Compute",
    "Conversion", "ExportInfo", "LayerResult", "LayerViews", "MethodParams", "OutOfMemory", "ParamInfo", "RunOptions",
    "RunReport", "TransferMethod", "TransferSettings", "Verdict", "WeightedLora", "__version__", "demo_inputs",
    "expert_choices", "layer_verdict", "method_doc", "methods", "model_figures", "model_verdict", "parse_rank",
    "parse_weighted", "ranks", "resolve_device", "resource_dir", "thresholds_table",
]
