"""Diagnostics for msml runs: ArviZ data, convergence checks, text reports.

``arviz_adapter`` is the only module in msml that imports ArviZ (0.23.x
InferenceData or 1.x DataTree, detected once).  ArviZ is imported lazily, so
importing this package is cheap.
"""

from .arviz_adapter import (
    arviz_major,
    build_inference_data,
    ess_bulk,
    ess_tail,
    get_group,
    group_names,
    has_group,
    hdi_column_names,
    load_netcdf,
    loo,
    loo_summary,
    mcse_mean,
    rhat,
    save_netcdf,
    summary_table,
)
from .checks import CODES, EBFMI_THRESHOLD, DiagnosticWarning, check_convergence, e_bfmi
from .report import format_summary, format_warnings

__all__ = [
    "CODES",
    "EBFMI_THRESHOLD",
    "DiagnosticWarning",
    "arviz_major",
    "build_inference_data",
    "check_convergence",
    "e_bfmi",
    "ess_bulk",
    "ess_tail",
    "format_summary",
    "format_warnings",
    "get_group",
    "group_names",
    "has_group",
    "hdi_column_names",
    "load_netcdf",
    "loo",
    "loo_summary",
    "mcse_mean",
    "rhat",
    "save_netcdf",
    "summary_table",
]
