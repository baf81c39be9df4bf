"""Convergence checks for NUTS output, each with a concrete remedy.

Codes are stable strings; tools and tests may match on them.

======  ==================  ========  ==============================================
code    name                severity  fires when
======  ==================  ========  ==============================================
W101    rhat                warning   rank-normalised split R-hat > rhat_threshold
                                      (default 1.01) for any scalar parameter
W102    ess_bulk            warning   bulk ESS < min_ess_per_chain x chains
                                      (default 100 per chain, Stan's rule)
W103    ess_tail            warning   tail ESS < min_ess_per_chain x chains
W201    divergences         warning   any post-warmup draw has ``diverging`` set
W202    tree_depth          warning   draws hit ``max_tree_depth`` (``tree_depth``
                                      >= max, or ``n_steps`` >= 2**max - 1 when
                                      ``tree_depth`` is not recorded)
W203    ebfmi               warning   E-BFMI < 0.3 in some chain, with
                                      E-BFMI = sum(diff(E)^2) / sum((E - mean E)^2)
I101    single_chain        info      only one chain: R-hat cannot be judged
I102    no_sample_stats     info      sample_stats group (or a statistic the
                                      sampler checks need) is missing
I103    network_function    info      a network term's weights are not judged
                                      (not identified); its values on an input
                                      grid are, in W101-W103
I104    library_function    info      a horseshoe library's scales and z_k are
                                      not judged (weakly identified by design);
                                      its coefficients and its values on an
                                      input grid are, in W101-W103
======  ==================  ========  ==============================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import arviz_adapter as _ad

__all__ = [
    "CODES",
    "DiagnosticWarning",
    "check_convergence",
    "e_bfmi",
    "EBFMI_THRESHOLD",
]

CODES: dict[str, str] = {
    "W101": "rhat",
    "W102": "ess_bulk",
    "W103": "ess_tail",
    "W201": "divergences",
    "W202": "tree_depth",
    "W203": "ebfmi",
    "I101": "single_chain",
    "I102": "no_sample_stats",
    "I103": "network_function",
    "I104": "library_function",
}

EBFMI_THRESHOLD = 0.3
_WORST_SHOWN = 5


@dataclass(frozen=True)
class DiagnosticWarning:
    code: str
    message: str
    remedy: str
    severity: str  # 'warning' | 'info'

    @property
    def name(self) -> str:
        """Short stable name for the code, e.g. 'rhat' for W101."""
        return CODES.get(self.code, "")

    def __str__(self) -> str:
        return f"{self.code} {self.name}: {self.message} Remedy: {self.remedy}"


def e_bfmi(energy) -> np.ndarray:
    """Energy Bayesian fraction of missing information, one value per chain.

    ``energy`` is (chain, draw) (a 1-D array is treated as one chain).
    E-BFMI = sum_t (E_t - E_{t-1})^2 / sum_t (E_t - mean E)^2.
    """
    e = np.asarray(energy, dtype=float)
    if e.ndim == 1:
        e = e[None, :]
    if e.ndim != 2:
        raise ValueError(f"energy must be (chain, draw); got shape {e.shape}")
    num = np.sum(np.diff(e, axis=1) ** 2, axis=1)
    den = np.sum((e - e.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _fmt_worst(items: list[tuple[str, float]], fmt: str) -> str:
    shown = ", ".join(f"{k}={format(v, fmt)}" for k, v in items[:_WORST_SHOWN])
    extra = len(items) - _WORST_SHOWN
    return shown + (f" (and {extra} more)" if extra > 0 else "")


def _fmt_pct(pct: float) -> str:
    return f"{pct:.2g}%" if pct < 1 else f"{pct:.1f}%"


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in d.items() if v is not None and math.isfinite(v)}


def _posterior_chains_draws(data) -> tuple[int, int]:
    post = _ad.get_group(data, "posterior")
    return int(post.sizes.get("chain", 1)), int(post.sizes.get("draw", 0))


def check_convergence(
    data,
    *,
    max_tree_depth: int,
    rhat_threshold: float = 1.01,
    min_ess_per_chain: int = 100,
    functions=(),
) -> list[DiagnosticWarning]:
    """Run all checks on ``data`` (InferenceData or DataTree from the adapter).

    ``functions``: FunctionDiagnostics of network terms and horseshoe libraries (function_checks.py).
    A network's weights are left out of the R-hat and ESS checks (not identified: hidden units swap
    and flip sign) and the term's values on its input grid are checked instead, as ``name(point k)``;
    an info (I103) says so. A horseshoe library's tau, lambda_k, slab and z_k are left out (weakly
    identified by design) and its coefficients ``name[candidate]`` and values on the grid checked
    instead; an info (I104) says so and gives the left-out parameters' largest R-hat.

    Returns warnings in a stable order (W1xx, then W2xx, then infos).
    """
    out: list[DiagnosticWarning] = []
    infos: list[DiagnosticWarning] = []
    n_chains, n_draws = _posterior_chains_draws(data)
    skipped = {name for f in functions for name in f.parameters}

    def judged(values: dict[str, float], kind: str) -> dict[str, float]:
        """Drop the weights of network terms; add their functions' values on the grid."""
        kept = {k: v for k, v in values.items() if k.split("[", 1)[0] not in skipped}
        for f in functions:
            for label, v in zip(f.column_labels, getattr(f, kind)):
                kept[label] = float(v)
        return kept

    latent_rhat = _finite(_ad.rhat(data)) if n_chains >= 2 and any(f.kind == "library" for f in functions) else {}
    for f in functions:
        if f.kind == "library":
            own = {k: v for k, v in latent_rhat.items() if k.split("[", 1)[0] in f.parameters}
            worst = max(own.items(), key=lambda kv: kv[1]) if own else None
            infos.append(
                DiagnosticWarning(
                    "I104",
                    f"R-hat and ESS of {', '.join(f.parameters)} are not judged"
                    + (f" (largest R-hat {worst[1]:.3f}, {worst[0]})" if worst else "")
                    + ": a horseshoe's latent parameters are weakly identified by design (the data pin each "
                    "coefficient, a product of tau, lambda_k and z_k, not the factors: a spurious candidate's "
                    "coefficient stays near zero whatever its local scale, a kept one's z_k and lambda_k trade "
                    f"off along a ridge). Judged instead: the {f.n_coefficients} coefficients of '{f.name}' "
                    f"and its values at {len(f.points)} input points spanning the data (max R-hat "
                    f"{f.max_rhat:.3f}, min bulk ESS {f.min_ess_bulk:.0f}, min tail ESS {f.min_ess_tail:.0f}).",
                    "Nothing to do if the coefficients' and the function's R-hat and ESS pass; read the "
                    "identified equation, not tau and lambda.",
                    "info",
                )
            )
            continue
        infos.append(
            DiagnosticWarning(
                "I103",
                f"R-hat and ESS of {', '.join(f.parameters)} are not judged: a network's hidden units can "
                "swap and change sign, so chains may disagree on every weight while agreeing on the "
                f"function. Judged instead: '{f.name}' at {len(f.points)} input points spanning the data "
                f"(max R-hat {f.max_rhat:.3f}, min bulk ESS {f.min_ess_bulk:.0f}, "
                f"min tail ESS {f.min_ess_tail:.0f}).",
                "Nothing to do if the function's R-hat and ESS pass; weights' summaries have no meaning.",
                "info",
            )
        )

    # ---- W101 R-hat -------------------------------------------------------
    if n_chains < 2:
        infos.append(
            DiagnosticWarning(
                "I101",
                "Only one chain was run, so R-hat cannot detect chains that "
                "disagree.",
                "Run at least 4 chains (num_chains=4) to check convergence.",
                "info",
            )
        )
    else:
        rh = _finite(judged(_ad.rhat(data), "rhat"))
        bad = sorted(
            ((k, v) for k, v in rh.items() if v > rhat_threshold),
            key=lambda kv: -kv[1],
        )
        if bad:
            out.append(
                DiagnosticWarning(
                    "W101",
                    f"R-hat above {rhat_threshold:g} for {len(bad)} of {len(rh)} "
                    f"parameters; worst: {_fmt_worst(bad, '.3f')}. The chains have "
                    "not mixed, so the posterior estimates are unreliable.",
                    "Run longer chains (raise draws= and warmup= in the infer statement, or --draws and --warmup); if R-hat "
                    "stays high, reparameterise the model (e.g. non-centred "
                    "hierarchical priors) or tighten weakly identified priors.",
                    "warning",
                )
            )

    # ---- W102/W103 ESS ----------------------------------------------------
    min_ess = float(min_ess_per_chain * n_chains)
    for code, label, values in (
        ("W102", "bulk", judged(_ad.ess_bulk(data), "ess_bulk")),
        ("W103", "tail", judged(_ad.ess_tail(data), "ess_tail")),
    ):
        vals = _finite(values)
        low = sorted(((k, v) for k, v in vals.items() if v < min_ess), key=lambda kv: kv[1])
        if not low:
            continue
        what = (
            "posterior means and medians"
            if label == "bulk"
            else "posterior quantiles and credible intervals"
        )
        out.append(
            DiagnosticWarning(
                code,
                f"{label.capitalize()} ESS below {min_ess:g} ({min_ess_per_chain} per "
                f"chain x {n_chains} chains) for {len(low)} of {len(vals)} "
                f"parameters; lowest: {_fmt_worst(low, '.0f')}. Estimates of "
                f"{what} are imprecise.",
                "Draw more samples (raise draws= or --draws); if ESS per draw is very "
                "low, reparameterise to reduce posterior correlations "
                "(e.g. non-centred parameterisation, standardised predictors).",
                "warning",
            )
        )

    # ---- sampler statistics -----------------------------------------------
    stats = (
        _ad.get_group(data, "sample_stats")
        if _ad.has_group(data, "sample_stats")
        else None
    )
    missing: list[str] = []
    if stats is None:
        missing.append("sample_stats")
    else:
        # W201 divergences
        if "diverging" in stats.data_vars:
            div = np.asarray(stats["diverging"].values).astype(bool)
            n_div, total = int(div.sum()), int(div.size)
            if n_div:
                pct = 100.0 * n_div / total
                out.append(
                    DiagnosticWarning(
                        "W201",
                        f"{n_div} of {total} post-warmup draws ({_fmt_pct(pct)}) were "
                        "divergent transitions; the sampler could not follow the "
                        "posterior's curvature and the draws may be biased.",
                        "Raise target_accept (e.g. 0.8 -> 0.95 or 0.99) to take smaller "
                        "steps; if divergences persist, reparameterise (e.g. a "
                        "non-centred parameterisation for hierarchical scales) or "
                        "use more informative priors.",
                        "warning",
                    )
                )
        else:
            missing.append("diverging")

        # W202 tree depth saturation
        hits = None
        if "tree_depth" in stats.data_vars:
            depth = np.asarray(stats["tree_depth"].values)
            hits = depth >= max_tree_depth
        elif "n_steps" in stats.data_vars:
            steps = np.asarray(stats["n_steps"].values)
            hits = steps >= 2**max_tree_depth - 1
        else:
            missing.append("tree_depth")
        if hits is not None and hits.any():
            n_hit, total = int(hits.sum()), int(hits.size)
            pct = 100.0 * n_hit / total
            out.append(
                DiagnosticWarning(
                    "W202",
                    f"{n_hit} of {total} draws ({_fmt_pct(pct)}) hit the maximum tree "
                    f"depth of {max_tree_depth}; the sampler stopped trajectories "
                    "early, which lowers efficiency (not validity).",
                    f"Raise max_tree_depth (e.g. {max_tree_depth} -> "
                    f"{max_tree_depth + 2}) or reparameterise to remove strong "
                    "posterior correlations or scale differences between parameters.",
                    "warning",
                )
            )

        # W203 E-BFMI
        if "energy" in stats.data_vars:
            energy = stats["energy"].transpose("chain", "draw", ...).values
            if energy.ndim == 2 and energy.shape[1] >= 2:
                bfmi = e_bfmi(energy)
                low = [(c, float(b)) for c, b in enumerate(bfmi)
                       if math.isfinite(b) and b < EBFMI_THRESHOLD]
                if low:
                    detail = ", ".join(f"chain {c}: {b:.2f}" for c, b in low)
                    out.append(
                        DiagnosticWarning(
                            "W203",
                            f"E-BFMI below {EBFMI_THRESHOLD} in {len(low)} of "
                            f"{len(bfmi)} chains ({detail}); the momentum resampling "
                            "explores the energy distribution poorly, typical of "
                            "heavy tails or funnels.",
                            "Reparameterise the model (e.g. non-centred "
                            "parameterisation, log-transform or rescale heavy-tailed "
                            "parameters) and run longer warmup (raise warmup= or --warmup).",
                            "warning",
                        )
                    )
        else:
            missing.append("energy")

    if missing:
        infos.append(
            DiagnosticWarning(
                "I102",
                "Sampler statistics not available for: " + ", ".join(missing)
                + "; the corresponding checks were skipped.",
                "Record NUTS sample statistics (diverging, tree_depth or n_steps, "
                "energy) in the sample_stats group.",
                "info",
            )
        )
    return out + infos
