"""The one place in msml that imports ArviZ.

Two incompatible ArviZ generations are supported behind this module:

* ArviZ 0.x (0.23 is what pip gives on Python 3.11): results are
  ``arviz.InferenceData``; statistics live in ``arviz`` itself.
* ArviZ 1.x (Python 3.12+): results are ``xarray.DataTree`` built with
  ``arviz_base.from_dict``; statistics live in ``arviz_stats``.

The major version is detected once (:func:`arviz_major`).  Everything else in
msml talks to the functions below and never imports ``arviz``, ``arviz_base``
or ``arviz_stats`` directly.  ArviZ (and xarray) are imported lazily, inside
functions, so that ``import msml_dsl.diagnostics`` stays cheap.

Conventions
-----------
* Arrays in ``posterior``, ``sample_stats``, ``log_likelihood``,
  ``posterior_predictive``, ``prior``, ``sample_stats_prior`` and
  ``prior_predictive`` are shaped ``(chain, draw, *event_shape)``.
* ``observed_data`` arrays carry no sample dimensions.
* Sample statistic names follow ArviZ: ``diverging`` (bool), ``tree_depth``,
  ``n_steps``, ``energy``, ``lp``, ``step_size``, ``acceptance_rate``.
* Per-element results (:func:`ess_bulk`, :func:`rhat`, ...) are dicts keyed by
  labels like ``"mu"``, ``"theta[2]"``, ``"theta[a]"``, ``"L[0, 1]"``.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "arviz_major",
    "build_inference_data",
    "save_netcdf",
    "load_netcdf",
    "group_names",
    "get_group",
    "summary_table",
    "ess_bulk",
    "ess_tail",
    "rhat",
    "mcse_mean",
    "loo",
    "loo_summary",
    "hdi_column_names",
]

SAMPLE_DIMS = ("chain", "draw")

# Groups whose arrays are (chain, draw, *shape), in canonical order.
_SAMPLED_GROUPS = (
    "posterior",
    "posterior_predictive",
    "log_likelihood",
    "sample_stats",
    "prior",
    "prior_predictive",
    "sample_stats_prior",
)


# --------------------------------------------------------------------------- #
# Version detection and lazy imports
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=1)
def arviz_major() -> int:
    """Return the ArviZ major version in use (0 or 1+). Detected once.

    Raises ImportError when no usable ArviZ is installed.
    """
    try:
        with warnings.catch_warnings():
            # 0.2x prints a FutureWarning about the upcoming refactor on import.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz  # noqa: F401
    except ImportError:
        arviz = None
    if arviz is not None:
        version = str(getattr(arviz, "__version__", "0"))
        try:
            return int(version.split(".")[0])
        except ValueError:  # pragma: no cover - exotic version strings
            pass
    try:
        import arviz_base  # noqa: F401
        import arviz_stats  # noqa: F401
    except ImportError as exc:
        if arviz is not None:  # pragma: no cover
            return 0
        raise ImportError(
            "msml diagnostics need ArviZ: install 'arviz' (0.23 on Python 3.11, "
            "1.x on Python 3.12+)."
        ) from exc
    return 1


def _az0():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _azb():
    import arviz_base

    return arviz_base


def _azs():
    import arviz_stats

    return arviz_stats


def _is_datatree(data: Any) -> bool:
    import xarray as xr

    dt_cls = getattr(xr, "DataTree", None)
    return dt_cls is not None and isinstance(data, dt_cls)


# --------------------------------------------------------------------------- #
# Construction
# --------------------------------------------------------------------------- #
def _as_arrays(group: Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
    if group is None:
        return None
    return {str(k): np.asarray(v) for k, v in group.items()}


def _check_sampled(name: str, group: dict[str, np.ndarray]) -> None:
    shape0 = None
    for var, arr in group.items():
        if arr.ndim < 2:
            raise ValueError(
                f"{name}[{var!r}] must be shaped (chain, draw, ...); got shape {arr.shape}"
            )
        if shape0 is None:
            shape0 = arr.shape[:2]
        elif arr.shape[:2] != shape0:
            raise ValueError(
                f"{name}[{var!r}] has (chain, draw) = {arr.shape[:2]}, expected {shape0}"
            )


def build_inference_data(
    *,
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray] | None = None,
    observed_data: dict[str, np.ndarray] | None = None,
    log_likelihood: dict[str, np.ndarray] | None = None,
    posterior_predictive: dict[str, np.ndarray] | None = None,
    prior: dict | None = None,
    prior_predictive: dict | None = None,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, list | np.ndarray] | None = None,
    attrs: dict | None = None,
):
    """Assemble ArviZ data from plain numpy dicts.

    Arrays in posterior/sample_stats/log_likelihood/posterior_predictive/prior*
    are (chain, draw, *shape); observed_data arrays have no sample dims.
    ``dims`` maps a variable name to the names of its event dimensions (shared
    across groups, e.g. ``y`` in observed_data, log_likelihood and
    posterior_predictive), ``coords`` maps dimension names to labels.  ``attrs``
    are attached to every group (and, in 1.x, to the root).

    Returns ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (1.x).
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, value in (
        ("posterior", posterior),
        ("posterior_predictive", posterior_predictive),
        ("log_likelihood", log_likelihood),
        ("sample_stats", sample_stats),
        ("prior", prior),
        ("prior_predictive", prior_predictive),
        ("observed_data", observed_data),
    ):
        arrays = _as_arrays(value)
        if arrays is None:
            continue
        if name in _SAMPLED_GROUPS:
            _check_sampled(name, arrays)
        groups[name] = arrays
    if "posterior" not in groups or not groups["posterior"]:
        raise ValueError("posterior must contain at least one variable")
    if "sample_stats" in groups and "diverging" in groups["sample_stats"]:
        groups["sample_stats"]["diverging"] = groups["sample_stats"]["diverging"].astype(bool)

    attrs = dict(attrs or {})
    coords = {k: np.asarray(v) for k, v in (coords or {}).items()}

    if arviz_major() >= 1:
        azb = _azb()
        tree_attrs = {g: dict(attrs) for g in groups}
        if attrs:
            tree_attrs["/"] = dict(attrs)
        return azb.from_dict(
            groups,
            dims=dims or None,
            coords=coords or None,
            attrs=tree_attrs or None,
        )

    az = _az0()
    # 0.x from_dict applies dims/coords to every group and ignores coords a
    # group does not use.
    # 0.x takes per-group attrs as ``<group>_attrs`` keyword arguments; the
    # plain ``attrs`` lands on the InferenceData itself (and observed_data).
    group_attrs = {f"{g}_attrs": dict(attrs) for g in groups if g in _SAMPLED_GROUPS}
    return az.from_dict(
        **groups,
        dims=dims or None,
        coords=coords or None,
        attrs=dict(attrs) if attrs else None,
        **(group_attrs if attrs else {}),
    )


# --------------------------------------------------------------------------- #
# NetCDF I/O
# --------------------------------------------------------------------------- #
def _fsync_dir(folder: str) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_netcdf(data, path) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder,
    fsync, ``os.replace``).  An existing target is replaced; a reader never
    sees a half-written file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder
    )
    os.close(fd)
    try:
        if _is_datatree(data):
            data.to_netcdf(tmp, mode="w", engine="h5netcdf")
        else:
            data.to_netcdf(tmp, engine="h5netcdf", overwrite_existing=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def load_netcdf(path):
    """Read a file written by :func:`save_netcdf`, fully into memory (the file
    handle is closed on return)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if arviz_major() >= 1:
        import xarray as xr

        if hasattr(xr, "load_datatree"):
            return xr.load_datatree(path, engine="h5netcdf")
        with xr.open_datatree(path, engine="h5netcdf") as tree:  # pragma: no cover
            return tree.load().copy()
    az = _az0()
    idata = az.from_netcdf(path, engine="h5netcdf")
    # from_netcdf loads eagerly by default; make sure nothing stays lazy.
    for name in idata.groups():
        getattr(idata, name).load()
    return idata


# --------------------------------------------------------------------------- #
# Group access (dispatch on the object, not the installed version)
# --------------------------------------------------------------------------- #
def group_names(data) -> list[str]:
    """Names of the top-level groups, e.g. ['posterior', 'sample_stats']."""
    if _is_datatree(data):
        return [str(name) for name in data.children]
    return list(data.groups())


def get_group(data, name: str):
    """The named group as an ``xarray.Dataset``; KeyError if absent."""
    if name not in group_names(data):
        raise KeyError(f"no group {name!r}; have {group_names(data)}")
    if _is_datatree(data):
        return data[name].to_dataset()
    return getattr(data, name)


def has_group(data, name: str) -> bool:
    return name in group_names(data)


# --------------------------------------------------------------------------- #
# Per-element statistics
# --------------------------------------------------------------------------- #
def _posterior(data, var_names=None):
    import xarray as xr

    ds = data if isinstance(data, xr.Dataset) else get_group(data, "posterior")
    if var_names is not None:
        if isinstance(var_names, str):
            var_names = [var_names]
        missing = [v for v in var_names if v not in ds.data_vars]
        if missing:
            raise KeyError(f"unknown variables {missing}; have {list(ds.data_vars)}")
        ds = ds[list(var_names)]
    # Non-numeric variables cannot be summarised.
    keep = [v for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.number)
            or ds[v].dtype == bool]
    ds = ds[keep]
    return ds.astype(float) if keep else ds


def _labels_and_values(ds) -> list[tuple[str, float]]:
    """Flatten a Dataset of event-shaped results into (label, value) pairs."""
    out: list[tuple[str, float]] = []
    for var in ds.data_vars:
        da = ds[var]
        values = np.asarray(da.values, dtype=float)
        if values.ndim == 0:
            out.append((str(var), float(values)))
            continue
        axes = []
        for dim, size in zip(da.dims, values.shape):
            if dim in da.coords:
                axes.append([str(v) for v in np.asarray(da.coords[dim].values)])
            else:
                axes.append([str(i) for i in range(size)])
        for idx in np.ndindex(values.shape):
            label = ", ".join(axes[k][i] for k, i in enumerate(idx))
            out.append((f"{var}[{label}]", float(values[idx])))
    return out


def _stat_dataset(ds, kind: str):
    """Compute ESS/R-hat/MCSE over (chain, draw) for every variable of ds."""
    if arviz_major() >= 1:
        azs = _azs()
        sd = list(SAMPLE_DIMS)
        if kind == "ess_bulk":
            return azs.ess(ds, sample_dims=sd, method="bulk")
        if kind == "ess_tail":
            return azs.ess(ds, sample_dims=sd, method="tail")
        if kind == "rhat":
            return azs.rhat(ds, sample_dims=sd, method="rank")
        if kind == "mcse_mean":
            return azs.mcse(ds, sample_dims=sd, method="mean")
    else:
        az = _az0()
        if kind == "ess_bulk":
            return az.ess(ds, method="bulk")
        if kind == "ess_tail":
            return az.ess(ds, method="tail")
        if kind == "rhat":
            return az.rhat(ds, method="rank")
        if kind == "mcse_mean":
            return az.mcse(ds, method="mean")
    raise ValueError(kind)  # pragma: no cover


def _per_element(data, kind: str, var_names=None) -> dict[str, float]:
    ds = _posterior(data, var_names)
    if not ds.data_vars:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = _stat_dataset(ds, kind)
    return dict(_labels_and_values(result))


def ess_bulk(data, var_names=None) -> dict[str, float]:
    """Rank-normalised bulk ESS per scalar element of the posterior."""
    return _per_element(data, "ess_bulk", var_names)


def ess_tail(data, var_names=None) -> dict[str, float]:
    """Tail ESS (5%/95% quantiles) per scalar element of the posterior."""
    return _per_element(data, "ess_tail", var_names)


def rhat(data, var_names=None) -> dict[str, float]:
    """Rank-normalised split R-hat per scalar element of the posterior."""
    return _per_element(data, "rhat", var_names)


def mcse_mean(data, var_names=None) -> dict[str, float]:
    return _per_element(data, "mcse_mean", var_names)


# --------------------------------------------------------------------------- #
# Summary table
# --------------------------------------------------------------------------- #
def _pct(x: float) -> str:
    return f"{round(x * 100, 6):g}%"


def hdi_column_names(hdi_prob: float) -> tuple[str, str]:
    """('hdi_3%', 'hdi_97%') for 0.94, ('hdi_2.5%', 'hdi_97.5%') for 0.95."""
    if not 0 < hdi_prob < 1:
        raise ValueError("hdi_prob must be in (0, 1)")
    return f"hdi_{_pct((1 - hdi_prob) / 2)}", f"hdi_{_pct((1 + hdi_prob) / 2)}"


def _hdi_1d(x: np.ndarray, prob: float) -> tuple[float, float]:
    """Narrowest interval containing ``prob`` of the samples (ArviZ 'nearest')."""
    x = np.sort(x[np.isfinite(x)])
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    n_in = int(np.floor(prob * n))
    n_out = n - n_in
    if n_in == 0 or n_out == 0:
        return float(x[0]), float(x[-1])
    widths = x[n_in:] - x[:n_out]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + n_in])


def summary_table(data, var_names=None, hdi_prob: float = 0.94):
    """Posterior summary as a pandas DataFrame, one row per scalar element.

    Columns: mean, sd, hdi_<lo>%, hdi_<hi>% (named from ``hdi_prob``),
    mcse_mean, ess_bulk, ess_tail, r_hat.  ``sd`` uses ddof=0 like ArviZ.
    """
    import pandas as pd

    lo_name, hi_name = hdi_column_names(hdi_prob)
    ds = _posterior(data, var_names)
    columns = ["mean", "sd", lo_name, hi_name, "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
    if not ds.data_vars:
        return pd.DataFrame(columns=columns, dtype=float)

    rows: dict[str, dict[str, float]] = {}
    for var in ds.data_vars:
        da = ds[var].transpose(*SAMPLE_DIMS, ...)
        values = np.asarray(da.values, dtype=float)
        flat = values.reshape(values.shape[0] * values.shape[1], -1)
        event = ds[var].isel({d: 0 for d in SAMPLE_DIMS}, drop=True)
        event_ds = event.to_dataset(name=var)
        labels = [lab for lab, _ in _labels_and_values(event_ds)]
        for j, label in enumerate(labels):
            col = flat[:, j]
            lo, hi = _hdi_1d(col, hdi_prob)
            rows[label] = {
                "mean": float(np.mean(col)),
                "sd": float(np.std(col)),
                lo_name: lo,
                hi_name: hi,
            }

    for key, kind in (
        ("mcse_mean", "mcse_mean"),
        ("ess_bulk", "ess_bulk"),
        ("ess_tail", "ess_tail"),
        ("r_hat", "rhat"),
    ):
        values = _per_element(ds, kind)
        for label in rows:
            rows[label][key] = values.get(label, float("nan"))

    table = pd.DataFrame.from_dict(rows, orient="index")[columns]
    return table.astype(float)


# --------------------------------------------------------------------------- #
# LOO
# --------------------------------------------------------------------------- #
def loo(data, var_name: str | None = None):
    """PSIS-LOO via ArviZ, or None where unavailable (no log_likelihood group,
    or the installed ArviZ lacks loo).  Returns ArviZ's own ELPDData object;
    use :func:`loo_summary` for a version-neutral dict."""
    if not has_group(data, "log_likelihood"):
        return None
    if not list(get_group(data, "log_likelihood").data_vars):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if arviz_major() >= 1:
            func = getattr(_azs(), "loo", None)
        else:
            func = getattr(_az0(), "loo", None)
        if func is None:  # pragma: no cover
            return None
        return func(data, pointwise=True, var_name=var_name)


def loo_summary(data, var_name: str | None = None) -> dict[str, Any] | None:
    """Version-neutral view of :func:`loo`: elpd_loo, se, p_loo,
    n_data_points, n_samples, pareto_k_max, warning (bool); None when
    unavailable."""
    res = loo(data, var_name=var_name)
    if res is None:
        return None
    if arviz_major() >= 1:
        elpd, se, p = res.elpd, res.se, res.p
        n_data, n_samples = res.n_data_points, res.n_samples
        pareto_k, warn = getattr(res, "pareto_k", None), res.warning
    else:
        elpd, se, p = res["elpd_loo"], res["se"], res["p_loo"]
        n_data, n_samples = res["n_data_points"], res["n_samples"]
        pareto_k, warn = res.get("pareto_k"), res["warning"]
    k_max = float("nan")
    if pareto_k is not None:
        k_vals = np.asarray(getattr(pareto_k, "values", pareto_k), dtype=float)
        if k_vals.size:
            k_max = float(np.nanmax(k_vals))
    return {
        "elpd_loo": float(elpd),
        "se": float(se),
        "p_loo": float(p),
        "n_data_points": int(n_data),
        "n_samples": int(n_samples),
        "pareto_k_max": k_max,
        "warning": bool(warn),
    }


def array_diagnostics(values: np.ndarray) -> dict[str, np.ndarray]:
    """Rank-normalised split R-hat, bulk and tail ESS of each column of ``values`` (chain, draw, k)."""
    import xarray as xr

    v = np.asarray(values, dtype=float)
    ds = xr.Dataset({"f": (("chain", "draw", "point"), v)},
                    coords={"chain": np.arange(v.shape[0]), "draw": np.arange(v.shape[1]),
                            "point": np.arange(v.shape[2])})
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        for kind in ("rhat", "ess_bulk", "ess_tail"):
            out[kind] = np.asarray(_stat_dataset(ds, kind)["f"].values, dtype=float).reshape(-1)
    return out
