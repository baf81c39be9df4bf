"""Where a model's first-run preparation time goes (cold kernel caches).

    python benchmarks/compile_profile.py [--models sir,lv,chain20,chain50,chain200] [--repeats 3]

Each measurement is a fresh subprocess with an empty ``MSML_CACHE_DIR`` and (with ``--cold-core``)
an empty ``NUMBA_CACHE_DIR`` too, so the numbers are what a user pays the first time a model is
run. The phases are timed by wrapping msml's own functions (inclusive times):

* import:        ``import msml_dsl.api`` (what ``msml run`` pays before reading the model)
* frontend:      parse, check and lower the model to the IR (``compile_file``)
* solver sympy:  the ODE right-hand side's Jacobians, cse and printing (``_generate_source``)
* solver numba:  numba compilation of the generated right-hand-side cfuncs
* solver warm:   first calls of the (cached) generic solver core (``OdeSystem.warmup``)
* density sympy: the density's expressions, derivatives, cse and printing
* density numba: numba compilation of the generated density kernels (first call of each)
* rest:          everything else in ``model.program`` (Pyro program set-up, warm-up solve)

Times are CPU seconds of the worker process (``time.process_time``), which on a shared machine track
what an idle core's wall time would be far better than wall time does; the worker's wall time is shown.

It also times one gradient (4 chains) after preparation, so a faster compile can be checked not to
slow the gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# CPU seconds of this (single-threaded) process: on a shared machine wall time measures the load as much
# as the work; a process's CPU time is what its wall time would be on an idle core.
_clock = time.process_time
sys.path.insert(0, str(ROOT / "benchmarks"))


def _worker(name: str) -> dict:
    wall0 = time.perf_counter()
    t0 = _clock()
    import msml_dsl.api  # noqa: F401
    import_s = _clock() - t0
    from ode_posteriors import model_path  # noqa: E402

    import msml_dsl
    t0 = _clock()
    from msml_dsl.backends.pyro import ode_solver as os_
    from msml_dsl.backends.pyro import compiled_density as cd
    modules_s = _clock() - t0

    times: dict[str, float] = defaultdict(float)

    def timed(label, fn):
        def wrapper(*a, **k):
            s = _clock()
            try:
                return fn(*a, **k)
            finally:
                times[label] += _clock() - s
        return wrapper

    os_._generate_source = timed("solver sympy", os_._generate_source)
    os_._compile_kernels = timed("solver numba", os_._compile_kernels)
    os_._emit_assignments = timed("solver cse+print", os_._emit_assignments)
    cd.emit_assignments = timed("density cse+print", cd.emit_assignments)
    os_.OdeSystem.warmup = timed("solver warm", os_.OdeSystem.warmup)
    # density (the old code generation, to compare a tree before this change): njit kernels, loaded
    # lazily by numba, which compiles them on their first call.
    orig_load = getattr(cd, "load_kernels", None)
    if orig_load is not None:

        def load_kernels(source, names):
            s = _clock()
            fns = orig_load(source, names)
            times["density load"] += _clock() - s
            out = []
            for n, f in zip(names, fns):
                state = {"first": True}

                def call(*a, _f=f, _n=n, _state=state):
                    if _state["first"]:
                        _state["first"] = False
                        s = _clock()
                        r = _f(*a)
                        times[f"density numba {_n}"] += _clock() - s
                        return r
                    return _f(*a)
                call.py_func = getattr(f, "py_func", None)
                out.append(call)
            return out

        cd.load_kernels = load_kernels
    if hasattr(cd, "load_cfuncs"):
        cd.load_cfuncs = timed("density numba cfuncs", cd.load_cfuncs)
    cd.CompiledDensity._warm_up = timed("density warm", cd.CompiledDensity._warm_up)
    orig_init = cd.CompiledDensity.__init__

    def init(self, *a, **k):
        s = _clock()
        orig_init(self, *a, **k)
        times["density total"] += _clock() - s

    cd.CompiledDensity.__init__ = init

    with tempfile.TemporaryDirectory() as scratch:
        t1 = _clock()
        model = msml_dsl.compile_file(model_path(name, Path(scratch)), device="cpu")
        frontend_s = _clock() - t1
        t2 = _clock()
        program = model.program
        program_s = _clock() - t2
        prior = program.sample_prior(4, seed=1)
        z = program.to_unconstrained({k: prior[k] for k in program.layout})
        program.potential_and_grad(z)
        reps = 300
        best = []
        for _ in range(5):
            s = _clock()
            for _ in range(reps):
                program.potential_and_grad(z)
            best.append((_clock() - s) / reps)
    # (the old kernels compile on their first call, inside the warm-up; the new cfuncs when loaded)
    density_numba = sum(v for k, v in times.items() if k.startswith("density numba"))
    times["density warm"] -= sum(v for k, v in times.items() if k.startswith("density numba ") and "cfuncs" not in k)
    out = {"wall": time.perf_counter() - wall0, "import": import_s, "solver+density modules": modules_s,
           "frontend": frontend_s, "program": program_s, **times,
           "density sympy": times["density total"] - density_numba - times["density load"]
           - times["density warm"],
           "gradient_us": sorted(best)[len(best) // 2] * 1e6}
    out["rest"] = program_s - times["solver sympy"] - times["solver numba"] - times["solver warm"] - times[
        "density total"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sir,lv,chain20,chain50,chain200")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold-core", action="store_true", help="also empty numba's cache (solver core recompiles)")
    ap.add_argument("--json")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker)))
        return
    results = {}
    for name in args.models.split(","):
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as ncache:
                env = {**os.environ, "PYTHONPATH": str(ROOT), "MSML_CACHE_DIR": cache,
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
                if args.cold_core:
                    env["NUMBA_CACHE_DIR"] = ncache
                proc = subprocess.run([sys.executable, __file__, "--worker", name], capture_output=True, text=True,
                                      env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                print(name, "failed:", proc.stderr.strip().splitlines()[-3:])
                break
            runs.append(json.loads(lines[-1]))
        if not runs:
            continue
        keys = sorted({k for r in runs for k in r})
        med = {k: sorted(r.get(k, 0.0) for r in runs)[len(runs) // 2] for k in keys}
        results[name] = {"median": med, "runs": runs}
        print(f"== {name} (median of {len(runs)}, CPU seconds; wall {med['wall']:.1f} s; "
              f"load {os.getloadavg()[0]:.2f})")
        phases = ["import", "solver+density modules", "frontend", "program", "solver sympy", "solver cse+print",
                  "solver numba", "solver warm", "density sympy", "density cse+print", "density load", "density warm"]
        phases += [k for k in keys if k.startswith("density numba")] + ["density total", "rest", "gradient_us"]
        for k in phases:
            if k in med:
                print(f"   {k:<22} {med[k]:10.3f}" + ("" if k != "gradient_us" else " us"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
