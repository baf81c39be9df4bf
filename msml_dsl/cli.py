"""The ``msml`` command line: check, compile, run.

Exit codes: 0 success, 1 convergence checks failed (with ``--strict``),
2 errors in the model or its data, 3 inference failed, 4 a statement whose
backend does not exist yet, 70 internal error, 130 interrupted (draws kept).
No Python traceback is shown unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from msml_dsl.errors import (EXIT_CONVERGENCE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR,
                             Diagnostic, MsmlError, format_diagnostics)
from msml_dsl.version import __version__

EPILOG = """exit codes:
  0    success
  1    finished, but convergence checks failed (--strict)
  2    the model file or its data has errors (each printed with file:line:col)
  3    inference could not run (e.g. no finite starting point)
  4    the model uses a statement whose backend does not exist yet
  70   internal error in msml (please report it, with --debug output)
  130  interrupted; the draws completed so far were saved
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msml", description="Fit .msml models: known physics, unknown "
                                     "parameters, noisy data.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"msml {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_check = sub.add_parser("check", help="parse and check a model and its data; report every error")
    p_check.add_argument("model", help="path to a .msml file")

    p_compile = sub.add_parser("compile", help="print a compiler stage: the AST, the IR or the Pyro program")
    p_compile.add_argument("model", help="path to a .msml file")
    p_compile.add_argument("--emit", choices=["ast", "ir", "pyro"], default="ir", help="which stage to print (ir)")

    p_run = sub.add_parser("run", help="fit the model (what its 'infer' statement says) and save the results",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_run.add_argument("model", help="path to a .msml file")
    p_run.add_argument("--method", choices=["nuts", "chees", "map", "laplace", "svi"],
                       help="override the file's inference method (chees: many chains in lockstep; laplace and "
                            "svi: PDE models with solver pinn; map, laplace and nuts: models with fidelity levels, "
                            "where laplace integrates the GP hyperparameters by importance sampling and --draws "
                            "is its number of proposal draws)")
    p_run.add_argument("--chains", type=int, help="number of chains, run as one batch")
    p_run.add_argument("--superchains", type=int, help="chees: groups of chains sharing a start (nested R-hat)")
    p_run.add_argument("--warmup", type=int, help="adaptation iterations per chain (discarded)")
    p_run.add_argument("--draws", type=int, help="kept draws per chain")
    p_run.add_argument("--seed", type=int, help="random seed: the same seed gives the same draws on the same machine")
    p_run.add_argument("--target-accept", type=float, dest="target_accept",
                       help="step-size adaptation target (0.8; raise it when transitions diverge)")
    p_run.add_argument("--max-tree-depth", type=int, dest="max_tree_depth", help="NUTS tree depth limit (10)")
    p_run.add_argument("--metric", choices=["auto", "diag", "dense"],
                       help="mass matrix adapted during warm-up (auto: dense up to 50 parameters)")
    p_run.add_argument("--init", choices=["map", "prior", "uniform", "derivatives"],
                       help="where chains start (derivatives: optimise only from library coefficients fitted "
                            "to smoothed derivatives)")
    p_run.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE", dest="solver_option",
                       help="PDE models with solver pinn: override an option of solver pinn(...), e.g. "
                            "--solver-option adam_steps=500 (repeatable)")
    p_run.add_argument("--predictive", choices=["mixture", "linearised"],
                       help="models with fidelity levels, --method laplace: predictions by mixing the importance-sampled "
                            "draws (the default) or by the linearised Laplace predictive (the mean at the MAP)")
    p_run.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p_run.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared machine: competing threads "
                                                   "can run ten times slower)")
    p_run.add_argument("--out", help="run folder (default: msml_runs/NAME-TIMESTAMP)")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    p_run.add_argument("--strict", action="store_true", help="exit 1 when convergence checks fail")

    p_suggest = sub.add_parser("suggest", help="fit a model with fidelity levels and say where a new measurement of "
                                               "the highest level would help most")
    p_suggest.add_argument("model", help="path to a .msml file with fidelity levels")
    p_suggest.add_argument("--candidates", type=int, default=1024, help="candidate points over the inputs (1024)")
    p_suggest.add_argument("--level", help="the level to measure (default: the highest level with data)")
    p_suggest.add_argument("--criterion", choices=["variance", "eig", "imse"], default="variance",
                           help="largest predictive variance (default), expected information gain, or integrated "
                                "variance reduction (joint scheme)")
    p_suggest.add_argument("--top", type=int, default=5, help="how many candidates to list (5)")
    p_suggest.add_argument("--method", choices=["map", "laplace", "nuts"],
                           help="override the file's inference method (map: fixed hyperparameters; laplace: "
                                "integrated by importance sampling; nuts)")
    p_suggest.add_argument("--seed", type=int, help="random seed")
    p_suggest.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    return parser


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    # A batch scheduler ends a job at its time limit with SIGTERM: treat it as Ctrl-C, so the
    # draws completed so far are saved (a run killed by SIGTERM used to lose them all).
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return {"check": _check, "compile": _compile, "run": _run, "suggest": _suggest}[args.command](args)
    except MsmlError as exc:
        print(format_diagnostics(exc.diagnostics, exc.sources or _sources(args)), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a raw traceback
        if args.debug:
            raise
        print(f"msml: internal error: {type(exc).__name__}: {exc}\n"
              "This is a bug in msml, not in your model. Please report it with the output of --debug.",
              file=sys.stderr)
        return EXIT_INTERNAL


def _sources(args) -> dict[str, str]:
    try:
        return {args.model: Path(args.model).read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError, AttributeError):
        return {}


def _print_warnings(diagnostics, sources) -> None:
    if diagnostics:
        print(format_diagnostics(diagnostics, sources), file=sys.stderr)


def _check(args) -> int:
    from msml_dsl.api import check_file
    from msml_dsl.data.experiments import describe_experiments

    checked = check_file(args.model)
    _print_warnings(list(checked.warnings), {checked.file: checked.program.source})
    n_par = sum(p.size or 1 for p in checked.parameters)
    experiments = f", {describe_experiments(checked.experiment)}" if checked.experiment is not None else ""
    print(f"{args.model}: ok — model '{checked.name}': {len(checked.states)} states, {n_par} parameters, "
          f"{len(checked.observations)} observed columns{experiments}")
    return EXIT_OK


def _compile(args) -> int:
    if args.emit == "ast":
        from msml_dsl.syntax.parser import parse_file

        program = parse_file(args.model)
        for s in program.statements:
            print(f"{s.span.line}:{s.span.column}  {s!r}")
        return EXIT_OK
    from msml_dsl.api import compile_file

    model = compile_file(args.model, device="cpu")
    if args.emit == "ir":
        print(model.ir.to_json())
        return EXIT_OK
    print(describe_pyro_program(model))
    return EXIT_OK


def describe_pyro_program(model) -> str:
    """The Pyro program as text: sample sites with their distributions and shapes, and the ODE code."""
    import pyro

    program = model.program
    trace = pyro.poutine.trace(program.model).get_trace(2)
    lines = [f"# Pyro program for model '{model.ir.name}' (batch of n draws; shown with n = 2)",
             "def model(n):", "    with pyro.plate('draws', n, dim=-1):"]
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        if site.get("infer", {}).get("_deterministic"):
            lines.append(f"        {name} = deterministic   # derived, shape {tuple(site['value'].shape)}")
            continue
        kind = "observed" if site["is_observed"] else "latent"
        lines.append(f"        {name} ~ {_describe_fn(site['fn'])}   # {kind}, value shape {tuple(site['value'].shape)}")
    if model.ir.ode is not None:
        ode = model.ir.ode
        lines.append(f"    # ODE solved by the compiled '{ode.solver.method}' integrator with forward sensitivities "
                     f"(rtol={ode.solver.rtol:g}, atol={ode.solver.atol:g}) at {len(ode.output_times)} times")
        for s, r in zip(ode.states, ode.rhs):
            lines.append(f"    #   d{s}/d{ode.time} = {r}")
        source = getattr(program.system, "source", None)
        if source:
            lines.append("# generated integrator kernels:")
            lines.extend("# " + line for line in source.splitlines())
    return "\n".join(lines)


def _describe_fn(fn) -> str:
    from pyro.distributions import ExpandedDistribution, Independent, MaskedDistribution

    while isinstance(fn, (Independent, MaskedDistribution, ExpandedDistribution)):
        fn = fn.base_dist
    if type(fn).__name__ == "Truncated":
        low = "-inf" if fn.low is None else f"{fn.low:g}"
        high = "inf" if fn.high is None else f"{fn.high:g}"
        return f"{_describe_fn(fn.base)} truncated to [{low}, {high}]"
    return type(fn).__name__


def _run(args) -> int:
    from msml_dsl.api import compile_file

    t0 = time.perf_counter()
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    model = compile_file(args.model, device=args.device)
    _print_warnings(list(model.checked.warnings), {model.checked.file: model.checked.program.source})
    overrides = {k: getattr(args, k) for k in ("chains", "warmup", "draws", "seed", "target_accept",
                                                 "max_tree_depth", "metric", "init", "superchains")
                 if getattr(args, k) is not None}
    if model.is_pinn:
        return _run_pinn(args, model, overrides, t0)
    if getattr(model, "is_fidelity", False):
        if args.predictive is not None:
            overrides["predictive"] = args.predictive
        return _run_fidelity(args, model, overrides, t0)
    if args.predictive is not None:
        raise MsmlError([Diagnostic("E261", "--predictive applies to models with fidelity levels", file=args.model,
                                    help="other models predict from their posterior draws")], _sources(args))
    if args.solver_option:
        raise MsmlError([Diagnostic("E261", "--solver-option applies to PDE models with solver pinn; "
                                            f"'{model.ir.name}' is not one", file=args.model, help="set the solver's options in "
                                            "the model file's solver statement")], _sources(args))
    method = args.method or model.checked.inference.method
    if method in ("laplace",):
        raise MsmlError([Diagnostic("E263", f"inference method '{method}' is only available for PDE models "
                                            "with solver pinn", file=args.model, help="methods here: nuts, chees, map")],
                        _sources(args))
    if method == "map":
        fit = model.map(**({"seed": args.seed} if args.seed is not None else {}))
        print(fit.summary())
        return EXIT_OK
    progress = None if args.quiet else _progress_bar()
    try:
        if progress is not None:
            with progress[0]:
                fit = model.run(progress=progress[1], method=method, **overrides)
        else:
            fit = model.run(method=method, **overrides)
    except KeyboardInterrupt:
        print("interrupted during warm-up: no draws to keep", file=sys.stderr)
        return EXIT_INTERRUPTED
    folder = Path(args.out) if args.out else Path("msml_runs") / f"{model.ir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    fit.save(folder)
    print(fit.summary())
    for note in fit.sample.init_notes:
        print(f"note: {note}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    s = fit.sample
    print(f"\n{s.settings['chains']} chains x ({s.settings['warmup']} warmup + {s.settings['draws']} draws) "
          f"in {elapsed:.1f} s (compile {s.timings.get('compile_s', 0):.1f} s, sampling {s.timings['sampling_s']:.1f} s)"
          f"; results in {folder}/")
    if s.interrupted:
        print("interrupted: the draws completed so far were saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.strict and fit.warnings():
        return EXIT_CONVERGENCE
    return EXIT_OK


# CLI flags -> the options of each PINN inference method (flags a method lacks are errors, E261)
_FLAG = {"chains": "--chains", "warmup": "--warmup", "draws": "--draws", "seed": "--seed",
         "target_accept": "--target-accept", "max_tree_depth": "--max-tree-depth", "metric": "--metric",
         "init": "--init", "superchains": "--superchains"}


def _run_pinn(args, model, overrides: dict, t0: float) -> int:
    """``msml run`` for a PDE model with solver pinn: train, infer, report the terms, save the run folder."""
    from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS

    method = args.method or model.pinn_method()
    if method not in PINN_INFER_OPTIONS:
        raise MsmlError([Diagnostic("E263", f"--method {method} is not available for '{model.ir.name}', a PDE "
                                            "model solved by physics-informed networks", file=args.model,
                                    help="methods: " + ", ".join(PINN_INFER_OPTIONS))], _sources(args))
    accepted = PINN_INFER_OPTIONS[method]
    wrong = [k for k in overrides if k not in accepted]
    if wrong:
        flags = sorted(_FLAG[k] for k in accepted if k in _FLAG)
        raise MsmlError([Diagnostic("E261", f"{_FLAG[k]} does not apply to infer {method}(...) of a PINN model",
                                    file=args.model, help=f"infer {method} takes {', '.join(flags) or 'no such flag'} on the "
                                         f"command line; its options: {', '.join(sorted(accepted))}")
                         for k in wrong], _sources(args))
    solver_options = dict(_parse_option(item, args.model) for item in args.solver_option)
    progress = None if args.quiet else _training_bar()
    if progress is not None:
        with progress[0]:
            fit = model.run(progress=progress[1], method=method, solver_options=solver_options, **overrides)
    else:
        fit = model.run(method=method, solver_options=solver_options, **overrides)
    folder = Path(args.out) if args.out else Path("msml_runs") / f"{model.ir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    fit.save(folder, source_text=model.checked.program.source)
    print(fit.summary())
    h = fit.history
    timings = fit.timings
    print(f"\n{method} on physics-informed networks: {h.adam_steps} Adam + {h.lbfgs_steps} L-BFGS steps, "
          f"{time.perf_counter() - t0:.1f} s (training {timings.get('map_s', 0):.1f} s, inference "
          f"{timings.get('inference_s', 0):.1f} s); results in {folder}/")
    if args.strict and fit.warnings():
        return EXIT_CONVERGENCE
    return EXIT_OK


def _run_fidelity(args, model, overrides: dict, t0: float) -> int:
    """``msml run`` for a model with fidelity levels: fit the GP hyperparameters, print them with each
    level's noise and leave-one-out checks, save the run folder."""
    if args.solver_option:
        raise MsmlError([Diagnostic("E261", "--solver-option applies to PDE models with solver pinn",
                                    file=args.model, help="set solver gp(...) in the model file")], _sources(args))
    method = args.method or None
    progress = None if args.quiet or (method or model.checked.inference.method) != "nuts" else _progress_bar()
    if progress is not None:
        with progress[0]:
            fit = model.run(progress=progress[1], method=method, **overrides)
    else:
        fit = model.run(method=method, **overrides)
    folder = Path(args.out) if args.out else Path("msml_runs") / f"{model.ir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    fit.save(folder)
    print(fit.summary())
    print(f"\n{fit.method} over {len(model.ir.parameters)} hyperparameters in {time.perf_counter() - t0:.1f} s "
          f"(fit {fit.timings.get('fit_s', 0):.1f} s); results in {folder}/")
    return EXIT_OK


def _suggest(args) -> int:
    """``msml suggest``: fit, then rank candidate points for the next measurement of a level."""
    from msml_dsl.api import compile_file
    from msml_dsl.errors import did_you_mean

    model = compile_file(args.model, device=args.device)
    if not getattr(model, "is_fidelity", False):
        raise MsmlError([Diagnostic("E338", f"msml suggest needs a model with fidelity levels; '{model.ir.name}' has "
                                            "none", file=args.model, help="declare levels (fidelity NAME = ...) and "
                                                                          "tag the data with them")], _sources(args))
    levels = [lv.name for lv in model.ir.fidelity.levels]
    if args.level is not None and args.level not in levels:
        raise MsmlError([Diagnostic("E242", f"unknown fidelity level '{args.level}'", file=args.model,
                                    help=did_you_mean(args.level, levels) or "levels: " + ", ".join(levels))],
                        _sources(args))
    if args.candidates < 1 or args.top < 1:
        raise MsmlError([Diagnostic("E262", "--candidates and --top must be at least 1", file=args.model)])
    overrides = {"seed": args.seed} if args.seed is not None else {}
    fit = model.run(method=args.method, **overrides)
    level = args.level or model.ir.fidelity.target
    if args.criterion == "imse" and model.ir.fidelity.scheme != "joint":
        raise MsmlError([Diagnostic("E338", "--criterion imse needs the joint scheme (linear links); this model is "
                                            "fitted level by level", file=args.model,
                                    help="use --criterion variance or eig")], _sources(args))
    rows = fit.suggest_next(args.candidates, level=level, criterion=args.criterion, top=args.top,
                            seed=args.seed or 0)
    names = [a.name for a in model.ir.fidelity.inputs]
    print(f"{model.ir.name}: {fit.method} fit, {model.ir.fidelity.scheme} scheme; next measurement of '{level}' "
          f"by {args.criterion} over {args.candidates} candidates")
    head = "".join(f"{n:>12}" for n in names)
    print(f"  rank{head}{'mean':>12}{'sd':>12}{'score':>12}{'EIG (nats)':>12}")
    for i, r in enumerate(rows, 1):
        xs = "".join(f"{r.x[n]:12.5g}" for n in names)
        print(f"  {i:>4}{xs}{r.mean:12.5g}{r.sd:12.4g}{r.score:12.4g}{r.eig:12.4g}")
    best = rows[0]
    print("suggested: " + ", ".join(f"{n} = {best.x[n]:.6g}" for n in names))
    return EXIT_OK


def _parse_option(item: str, file: str | None = None) -> tuple[str, object]:
    """KEY=VALUE from the command line; the value as int, float, true/false or text."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise MsmlError([Diagnostic("E262", f"--solver-option '{item}' is not KEY=VALUE", file=file, help="for example --solver-option adam_steps=500")])
    text = text.strip()
    for kind in (int, float):
        try:
            return key.strip(), kind(text)
        except ValueError:
            pass
    return key.strip(), {"true": True, "false": False}.get(text.lower(), text)


def _rich_bar(description: str):
    """A rich progress bar on standard error with one task; drawn on a terminal only."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False,
                   disable=not console.is_terminal)
    return bar, bar.add_task(description, total=None, info="")


def _training_bar():
    """A rich progress bar for PINN training (then SVI or NUTS), shown on a terminal only."""
    bar, task = _rich_bar("training")
    state = {"phase": "training", "last": 0}

    def update(step: int, total: int, loss: float) -> None:
        # run_pinn reports training (Adam, then L-BFGS), then SVI steps or NUTS iterations (loss nan)
        if loss != loss:
            state["phase"] = "sampling"
        elif step < state["last"]:
            state["phase"] = "svi"
        state["last"] = step
        info = "" if loss != loss else f"loss {loss:.6g}"
        bar.update(task, completed=step, total=total, description=state["phase"], info=info)

    return bar, update


def _progress_bar():
    """A rich progress bar for sampling (step size and divergences alongside) on a terminal; elsewhere
    (a log file, a batch job) a plain line on standard error at every 5 % of the iterations."""
    bar, task = _rich_bar("sampling")
    started = time.perf_counter()
    printed = {"last": -1}

    def update(iteration: int, total: int, info: dict) -> None:
        text = f"step {info.get('step_size', 0):.3g}, divergences {info.get('divergences', 0)}"
        bar.update(task, completed=iteration, total=total, description=info.get("phase", "sampling"), info=text)
        step = max(1, total // 20)
        if not bar.console.is_terminal and (iteration // step > printed["last"] or iteration == total):
            printed["last"] = iteration // step
            print(f"{info.get('phase', 'sampling')} {iteration}/{total}: {text}, "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    return bar, update


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
