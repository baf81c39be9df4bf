"""The Python interface: compile a model, run inference, inspect the fit.

>>> import msml_dsl
>>> model = msml_dsl.compile_file("models/lotka_volterra/model.msml")   # doctest: +SKIP
>>> fit = model.sample(chains=4, warmup=500, draws=500)                  # doctest: +SKIP
>>> print(fit.summary())                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from typing import TYPE_CHECKING

from msml_dsl.data.csv_source import load_data
from msml_dsl.data.experiments import split_experiments
from msml_dsl.semantics.checker import check
from msml_dsl.semantics.model import CheckedModel
from msml_dsl.syntax.parser import parse, parse_file
from msml_dsl.version import __version__

if TYPE_CHECKING:  # SymPy and the IR load only when a model is compiled, so `msml check` starts fast
    from msml_dsl.ir.model_ir import ModelIR
    from msml_dsl.symbolic.builder import SymbolicModel


def check_file(path: str | Path) -> CheckedModel:
    """Parse and check a model file and its data; raise MsmlError listing every problem.

    The model is returned as written; with an ``experiment`` statement, ``experiment.labels``
    names the experiments the data hold (what ``msml check`` reports)."""
    from dataclasses import replace

    checked = check(parse_file(path))
    split, tables = split_experiments(checked, load_data(checked))
    if any(u.representation == "gp" and dict(u.options).get("method") == "exact" for u in checked.unknowns):
        # whether each call's inputs are known from the data is decided on the bound model (E316)
        from msml_dsl.ir.model_ir import lower_to_ir
        from msml_dsl.symbolic.builder import build_symbolic

        lower_to_ir(build_symbolic(split), tables)
    if checked.experiment is not None:
        checked = replace(checked, experiment=replace(checked.experiment, labels=split.experiment.labels))
    return checked


def compile_file(path: str | Path, device: str = "auto") -> "CompiledModel":
    """Compile a ``.msml`` file to a model object (parse, check, bind data, lower, emit Pyro).

    >>> m = compile_file("models/lotka_volterra/model.msml")   # doctest: +SKIP
    >>> m.ir.parameters[0].name                                # doctest: +SKIP
    'alpha'
    """
    return _compile(parse_file(path), device)


def compile_source(text: str, name: str = "<model>", device: str = "auto",
                   base_dir: str | Path | None = None) -> "CompiledModel":
    """Compile model text; data paths resolve against ``base_dir`` (default: the working folder).

    >>> m = compile_source(open("models/lotka_volterra/model.msml").read(),
    ...                    base_dir="models/lotka_volterra")   # doctest: +SKIP
    """
    file = str(Path(base_dir or Path.cwd()) / name)
    return _compile(parse(text, file), device)


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when torch sees a GPU; 'cuda' without one is an error."""
    import torch

    from msml_dsl.errors import Diagnostic, MsmlError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MsmlError([Diagnostic("E501", "--device cuda was asked for, but torch sees no CUDA GPU",
                                    help="use --device cpu or auto")])
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise MsmlError([Diagnostic("E501", f"unknown device '{device}'", help="use auto, cpu or cuda")])
    return device


def _compile(program_ast, device: str) -> "CompiledModel":
    from msml_dsl.ir.model_ir import lower_to_ir
    from msml_dsl.symbolic.builder import build_symbolic

    checked = check(program_ast)
    checked, tables = split_experiments(checked, load_data(checked))
    symbolic = build_symbolic(checked)
    ir = lower_to_ir(symbolic, tables)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        resolve_device(device)                  # an unknown device name is an error now, not at first use
    return CompiledModel(checked, symbolic, ir, device)


@dataclass
class CompiledModel:
    """A compiled model: its checked form, SymPy form, IR and (lazily) its Pyro program."""

    checked: CheckedModel
    symbolic: "SymbolicModel"
    ir: "ModelIR"
    requested_device: str = "cpu"           # auto | cpu | cuda[:k], resolved on first use
    _device: str | None = field(default=None, repr=False)
    _program: object = field(default=None, repr=False)

    @property
    def device(self) -> str:
        """The device the model runs on: resolving 'auto' or 'cuda' imports torch, so it waits until a
        fit needs it and ``msml check`` or a rejected command-line option answers without it."""
        if self._device is None:
            self._device = resolve_device(self.requested_device)
        return self._device

    @property
    def program(self):
        """The Pyro program (compiles the ODE integrator on first use)."""
        if self._program is None:
            from msml_dsl.backends.pyro.program import build_pyro_program

            self._program = build_pyro_program(self.ir, self.device)
        return self._program

    @property
    def pyro_model(self) -> Callable:
        """The Pyro model function: ``pyro_model(n)`` samples a batch of n draws."""
        return self.program.model

    def run(self, progress: Callable | None = None, **overrides):
        """Run what the file's ``infer`` statement says (NUTS by default), with overrides.

        A PDE model with ``solver pinn`` goes to the PINN backend (``laplace`` by default) and
        returns a ``PinnFit``; it also takes ``solver_options={...}`` for ``solver pinn(...)``.
        """
        if self.is_pinn:  # PDE fields as physics-informed networks
            return self._run_pinn(progress, overrides)
        if self.is_fidelity:  # fidelity levels linked by Gaussian processes
            return self._run_fidelity(progress, overrides)
        method = overrides.pop("method", None) or self.checked.inference.method
        options = {**dict(self.checked.inference.options), **overrides}
        if method == "map":
            return self.map(**{k: v for k, v in options.items() if k in ("seed", "starts", "max_iter", "init")})
        if method == "svi":
            from msml_dsl.errors import Diagnostic, UnsupportedFeature
            from msml_dsl.syntax.ast import InferDecl

            decls = self.checked.program.of_type(InferDecl)
            raise UnsupportedFeature([Diagnostic(
                "E403", "infer svi() is not supported for ODE models yet; use nuts or map",
                decls[0].span if decls else None, self.checked.file)],
                {self.checked.file: self.checked.program.source})
        keys = ("chains", "warmup", "draws", "seed", "target_accept", "max_tree_depth", "metric", "init", "thin",
                "superchains")
        return self.sample(progress=progress, method=method, **{k: v for k, v in options.items() if k in keys})

    @property
    def is_fidelity(self) -> bool:
        """A multi-fidelity model (``fidelity`` levels and tagged data): fitted by Gaussian processes."""
        return getattr(self.ir, "fidelity", None) is not None

    def _run_fidelity(self, progress: Callable | None, overrides: dict):
        """``run()`` for a multi-fidelity model: MAP (default without an infer line), laplace (the
        hyperparameters integrated out by importance sampling) or NUTS over the GP hyperparameters;
        returns a ``FidelityFit`` (summary, predict, suggest_next, save)."""
        from msml_dsl.backends.multifidelity import FIDELITY_METHODS, run_fidelity
        from msml_dsl.errors import Diagnostic, MsmlError, did_you_mean
        from msml_dsl.syntax.ast import InferDecl

        overrides = dict(overrides)
        has_infer = bool(self.checked.program.of_type(InferDecl))
        method = overrides.pop("method", None) or (self.ir.inference.method if has_infer else "map")
        file, sources = self.checked.file, {self.checked.file: self.checked.program.source}
        if method not in FIDELITY_METHODS:
            raise MsmlError([Diagnostic("E263", f"inference method '{method}' is not available for a model with "
                                                "fidelity levels", file=file, help="use map, laplace or nuts")], sources)
        given = dict(self.ir.inference.options) if self.ir.inference.method == method else {}
        if self.ir.inference.method in FIDELITY_METHODS and not given:   # e.g. map after laplace: same starts
            given = {k: v for k, v in self.ir.inference.options if k in FIDELITY_METHODS[method] and k != "draws"}
        unknown = [k for k in overrides if k not in FIDELITY_METHODS[method]]
        if unknown:
            raise MsmlError([Diagnostic("E261", f"infer {method}(...) of a fidelity model has no option '{k}'",
                                        file=file, help=did_you_mean(k, FIDELITY_METHODS[method])
                                        or "options: " + ", ".join(FIDELITY_METHODS[method])) for k in unknown],
                            sources)
        return run_fidelity(self.ir, self.device, method, {**given, **overrides}, progress,
                            self.checked.program.source)

    @property
    def is_pinn(self) -> bool:
        """A PDE model solved by physics-informed networks (``solver pinn``, the default for fields)."""
        pde = getattr(self.ir, "pde", None)
        return pde is not None and pde.solver.method == "pinn"

    def pinn_method(self) -> str:
        """The inference method of a PINN model: the file's ``infer``, or ``laplace`` without one.

        NUTS (the ODE models' default) needs a trained MAP first and then samples the last layers;
        the Laplace approximation at that MAP is what most PINN runs want, in seconds.
        """
        from msml_dsl.syntax.ast import InferDecl

        return self.ir.inference.method if self.checked.program.of_type(InferDecl) else "laplace"

    def _run_pinn(self, progress: Callable | None, overrides: dict):
        """``run()`` for a PINN model: options checked here (E261/E262/E263), then ``run_pinn``.

        ``overrides`` may hold ``method``, options of that inference method, and ``solver_options``
        (a dict overriding the file's ``solver pinn(...)``).
        """
        from msml_dsl.backends.pinn.inference import run_pinn
        from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS, PINN_OPTIONS, resolve_options
        from msml_dsl.errors import Diagnostic, MsmlError, did_you_mean

        overrides = dict(overrides)
        method = overrides.pop("method", None) or self.pinn_method()
        solver_options = dict(overrides.pop("solver_options", None) or {})
        file = self.checked.file
        sources = {file: self.checked.program.source}
        if method not in PINN_INFER_OPTIONS:
            raise MsmlError([Diagnostic("E263", f"inference method '{method}' is not available for a PDE model "
                                                "solved by physics-informed networks", file=file,
                                        help="methods: " + ", ".join(PINN_INFER_OPTIONS))], sources)
        problems = []
        for spec, given, where in ((PINN_INFER_OPTIONS[method], overrides, f"infer {method}(...)"),
                                   (PINN_OPTIONS, solver_options, "solver pinn(...)")):
            for key in given:
                if key not in spec:
                    problems.append(Diagnostic("E261", f"{where} has no option '{key}'", file=file,
                                               help=did_you_mean(key, spec) or f"it accepts {', '.join(sorted(spec))}"))
            try:
                resolve_options(spec, {k: v for k, v in given.items() if k in spec}, where)
            except ValueError as exc:
                problems.append(Diagnostic("E262", str(exc), file=file))
        if problems:
            raise MsmlError(problems, sources)
        fit = run_pinn(self.ir, self.device, method, overrides, progress, solver_options)
        fit.source = self.checked.program.source
        return fit

    def sample(self, chains: int | None = None, warmup: int | None = None, draws: int | None = None,
               seed: int | None = None, progress: Callable | None = None, method: str = "nuts",
               **options) -> "Fit":
        """Draw from the posterior with NUTS (chains run as one batch) or, with method="chees",
        ChEES-HMC (many chains in lockstep, nested R-hat over superchains)."""
        from msml_dsl.inference.runner import sample_chees, sample_nuts

        if method not in ("nuts", "chees"):
            raise ValueError(f"unknown sampler {method!r}: use 'nuts' or 'chees'")
        file_opts = dict(self.checked.inference.options) if self.checked.inference.method == method else {}
        given = {k: v for k, v in dict(chains=chains, warmup=warmup, draws=draws, seed=seed).items() if v is not None}
        opts = {**file_opts, **options, **given}
        t0 = time.perf_counter()
        _ = self.program
        compile_s = time.perf_counter() - t0
        sample = (sample_nuts if method == "nuts" else sample_chees)(self.program, opts, progress)
        sample.timings["compile_s"] = compile_s
        return Fit(self, sample)

    def map(self, seed: int = 1, starts: int = 8, max_iter: int = 1000, init: str = "map") -> "MapFit":
        """The posterior mode from several L-BFGS starts (``init="derivatives"``: only from library
        coefficients fitted to smoothed derivatives of the observed states)."""
        from msml_dsl.inference.runner import map_estimate

        result, values = map_estimate(self.program, {"seed": seed, "starts": starts, "max_iter": max_iter,
                                                     "init": init})
        derived = self.program.evaluate_draws({k: v[None] for k, v in values.items()}, seed=seed,
                                              predictive=False)["derived"]
        return MapFit(self, values, {k: v[0] for k, v in derived.items()}, result.log_density,
                      result.n_starts, result.n_converged)

    def prior_predictive(self, draws: int = 500, seed: int = 1) -> dict[str, np.ndarray]:
        """Draws of parameters and observations from the prior."""
        return self.program.sample_prior(draws, seed)


class _UnknownTermReports:
    """Identified equations, the rewritten model and plots of unknown terms, from ``_term_draws``
    (the posterior's draws for a Fit, the mode as a single draw for a MapFit)."""

    def identified(self):
        """Each library term as an identified equation, with inclusion probabilities and intervals
        (at a mode inclusion is 0 or 1)."""
        from msml_dsl.diagnostics.identified import identify_terms

        return identify_terms(self.model.ir, self._term_draws)

    def identified_model(self) -> str:
        """The model's source with its library terms made explicit (posterior medians)."""
        from msml_dsl.diagnostics.identified import rewrite_model

        return rewrite_model(self.model.checked.program, self.identified())

    def identified_refit_model(self, form: str = "library", folder: str | Path | None = None) -> str:
        """Select, then refit: the model with each library term reduced to its kept candidates, their
        coefficients re-estimated with the slab as prior (``form="library"``: a library of those
        candidates, ``sparsity=normal(slab)``; ``"parameters"``: one parameter each, ``fy_x_z``). Fit
        it to estimate them on the selected structure alone: its intervals ignore the uncertainty of
        the selection. With ``folder``, relative data paths resolve from that folder."""
        from msml_dsl.diagnostics.identified import rewrite_model

        return rewrite_model(self.model.checked.program, self.identified(), refit=form, folder=folder)

    def plot_unknowns(self, folder: str | Path) -> list[Path]:
        """unknown_NAME.png per unknown term: median and 90 % band over the data's range."""
        from msml_dsl.diagnostics.unknown_plots import plot_unknown_terms

        return plot_unknown_terms(self.model.ir, self._term_draws, folder)


@dataclass
class MapFit(_UnknownTermReports):
    """A posterior mode."""

    model: CompiledModel
    values: dict[str, np.ndarray]
    derived: dict[str, np.ndarray]
    log_density: float
    n_starts: int
    n_converged: int

    @property
    def draws(self) -> dict[str, np.ndarray]:
        """The mode as a single draw of every parameter and derived quantity."""
        return {k: np.asarray(v)[None] for k, v in {**self.values, **self.derived}.items()}

    def summary(self) -> str:
        rows = [f"MAP of {self.model.ir.name}: log density {self.log_density:.3f} "
                f"({self.n_converged} of {self.n_starts} optimisations converged)"]
        for k, v in {**self.values, **self.derived}.items():
            rows.append(f"  {k:<20} {np.array2string(np.asarray(v), precision=5)}")
        text = "\n".join(rows)
        identified = _identified_text(self)
        return text + ("\n\n" + identified if identified else "")

    @property
    def _term_draws(self):
        return self.draws


class Fit(_UnknownTermReports):
    """A NUTS posterior with diagnostics; ``to_arviz()`` gives ArviZ's object."""

    def __init__(self, model: CompiledModel, sample):
        self.model = model
        self.sample = sample
        self._idata = None

    @property
    def posterior(self) -> dict[str, np.ndarray]:
        """Draws of parameters and derived quantities, (chain, draw, ...)."""
        return {**self.sample.parameters, **self.sample.derived}

    def to_arviz(self):
        """InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x)."""
        if self._idata is None:
            from msml_dsl.diagnostics import build_inference_data

            s = self.sample
            observed = {o.name: o.values[o.mask] for o in self.model.ir.observations}
            dims, coords = {}, {}
            for o in self.model.ir.observations:
                dims[o.name] = [f"{o.name}_row"]
                coords[f"{o.name}_row"] = np.asarray(o.file_lines)[o.mask]
            predictive = {k: v[..., self.model.ir.observations[i].mask]
                          for i, (k, v) in enumerate(s.posterior_predictive.items())}
            for p in self.model.ir.parameters:
                if p.shape:
                    dims[p.name] = [f"{p.name}_dim"]
                    coords[f"{p.name}_dim"] = np.arange(1, p.shape[0] + 1)
            self._idata = build_inference_data(
                posterior=self.posterior, sample_stats=s.sample_stats, observed_data=observed,
                log_likelihood=s.log_likelihood, posterior_predictive=predictive, prior=s.prior or None,
                prior_predictive=s.prior_predictive or None, dims=dims, coords=coords,
                attrs={"model": self.model.ir.name, "msml_version": __version__,
                       "seed": int(s.settings["seed"])})
        return self._idata

    def summary_table(self):
        from msml_dsl.diagnostics import summary_table

        return summary_table(self.to_arviz(), var_names=list(self.posterior))

    def warnings(self):
        from msml_dsl.diagnostics import DiagnosticWarning, check_convergence

        from msml_dsl.diagnostics.function_checks import unidentified_functions

        settings = self.sample.settings
        functions = unidentified_functions(self.model.ir, self.sample.parameters)   # networks, horseshoe libraries
        if settings["method"] == "nuts":
            found = check_convergence(self.to_arviz(), max_tree_depth=int(settings["max_tree_depth"]),
                                      functions=functions)
        else:
            # Many short chains: nested R-hat (below) replaces R-hat, and ESS is judged in total (400).
            found = check_convergence(self.to_arviz(), max_tree_depth=10**6, rhat_threshold=math.inf,
                                      min_ess_per_chain=400 / settings["chains"], functions=functions)
        nested = self.sample.nested_rhat
        high = {k: v for k, v in nested.items() if v > 1.01}
        if high:
            worst = ", ".join(f"{k}={v:.3f}" for k, v in sorted(high.items(), key=lambda kv: -kv[1])[:3])
            found.append(DiagnosticWarning(
                "W104", f"nested R-hat above 1.01 for {len(high)} of {len(nested)} parameters; worst: {worst}. "
                "Superchains started apart have not forgotten their starting points.",
                "Run a longer warm-up (warmup= or --warmup), or more draws per chain.", "warning"))
        return found

    @property
    def _term_draws(self):
        return self.posterior

    def evaluate_unknown(self, name: str, **points) -> np.ndarray:
        """Posterior draws of an unknown term at input values; warns when extrapolating."""
        from msml_dsl.diagnostics.unknown_plots import evaluate_unknown

        term = next(t for t in self.model.ir.unknowns if t.name == name)
        return evaluate_unknown(term, self.posterior, points)

    def summary(self) -> str:
        """The printed summary: mean, sd, HDI, ESS, R-hat, then warnings with remedies."""
        from msml_dsl.diagnostics import format_summary

        text = format_summary(self.summary_table(), self.warnings())
        identified = _identified_text(self)
        if identified:
            text += "\n" + identified + "\n"
        if self.sample.nested_rhat:
            worst = max(self.sample.nested_rhat.values())
            text += (f"\nnested R-hat over {self.sample.settings['superchains']} superchains of "
                     f"{self.sample.settings['chains'] // self.sample.settings['superchains']} chains: "
                     f"max {worst:.4f}")
        return text

    def save(self, folder: str | Path, source_text: str | None = None) -> Path:
        """Write the run folder: posterior.nc, summary.txt, model.msml, run.json (each atomically)."""
        from msml_dsl.diagnostics import save_netcdf

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_netcdf(self.to_arviz(), folder / "posterior.nc")
        _atomic_write(folder / "summary.txt", self.summary() + "\n")
        text = source_text if source_text is not None else self.model.checked.program.source
        _atomic_write(folder / "model.msml", text)
        _atomic_write(folder / "run.json", json.dumps(self.run_record(), indent=2, default=_json_safe) + "\n")
        _save_unknowns(self, folder)
        if getattr(self.model.ir, "pde", None) is not None:   # method of lines: the fields on its grid
            from msml_dsl.diagnostics.pde_fields import save_mol_fields

            save_mol_fields(self, folder)
        return folder

    def run_record(self) -> dict:
        import arviz
        import pyro
        import torch

        s = self.sample
        return {
            "model": self.model.ir.name, "file": self.model.checked.file, "method": s.settings["method"],
            "nested_rhat": s.nested_rhat or None,
            "settings": s.settings, "device": self.model.device, "interrupted": s.interrupted,
            "draws_completed": int(next(iter(s.parameters.values())).shape[1]) if s.parameters else 0,
            "timings_s": s.timings, "init_notes": s.init_notes,
            "solver": vars(self.model.ir.ode.solver) if self.model.ir.ode else None,
            "versions": {"msml": __version__, "python": platform.python_version(), "torch": torch.__version__,
                         "pyro": pyro.__version__, "arviz": arviz.__version__, "numpy": np.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def _json_safe(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _identified_text(fit) -> str:
    if not any(t.kind == "library" for t in fit.model.ir.unknowns):
        return ""
    from msml_dsl.diagnostics.identified import format_identified

    return format_identified(fit.identified())


def _save_unknowns(fit, folder: Path) -> None:
    """identified.msml (library terms made explicit), identified_refit.msml (libraries of the kept
    candidates, to refit) and a plot per unknown term."""
    if not fit.model.ir.unknowns:
        return
    if any(t.kind == "library" for t in fit.model.ir.unknowns):
        _atomic_write(folder / "identified.msml", fit.identified_model())
        _atomic_write(folder / "identified_refit.msml", fit.identified_refit_model(folder=folder))
    try:
        fit.plot_unknowns(folder)
    except ImportError:  # matplotlib is an optional extra
        pass
