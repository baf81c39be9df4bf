"""A fidelity level solved from another ``.msml`` file: ``simulate(OUTPUT, model="other.msml", ...)``.

The other file is a model of its own (an ODE, or a time-dependent PDE solved by the method of
lines); the level is its state or field OUTPUT solved on a coarse fixed grid, at this file's
inputs. Its parameters are this file's parameters of the same names (so the coarse model is
calibrated with the levels), its constants stay its own.

Checked here (E337, at the call): the path (relative to this file), a file that is missing or
fails its own check (its errors are quoted), a cycle of files that use each other, an output the
other model does not have, the other model's coordinates and parameters that this file does not
declare, and a time range beyond the other model's.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from msml_dsl.errors import MsmlError, did_you_mean, format_diagnostics
from msml_dsl.syntax import ast

#: simulate(...) options; ``model`` and ``points`` only with another file
SIMULATE_FILE_OPTIONS = ("model", "points")

# resolved paths of the files being checked, outermost first (a file whose levels load another
# file pushes itself while that one is checked), to report a cycle instead of recursing forever
_CHECKING: list[Path] = []


@contextlib.contextmanager
def checking(path: Path):
    _CHECKING.append(path)
    try:
        yield
    finally:
        _CHECKING.pop()


def model_option(call: ast.Call):
    """The ``model="..."`` keyword of a simulate() call, or None."""
    return next((kw for kw in call.keywords if kw.name.id == "model"), None)


def resolve(program: ast.Program, text: str) -> Path:
    """A level's model path, relative to the folder of the file that names it."""
    own = program.file
    base = Path(own).resolve().parent if own and not own.startswith("<") else Path.cwd()
    return (base / text).resolve()


def load_checked(path: Path):
    """Parse and check another model file."""
    from msml_dsl.semantics.checker import check
    from msml_dsl.syntax.parser import parse_file

    return check(parse_file(path))


def check_model_level(checker, call: ast.Call, kw: ast.Keyword, time_name: str | None, space: dict) -> set[str]:
    """Check ``simulate(OUTPUT, model="file.msml", steps=, method=, points=)``; return the coordinates
    the level depends on (the other model's time, and its space variables for a PDE)."""
    bag = checker.bag
    if not isinstance(kw.value, ast.String):
        bag.error("E337", "model= takes the path of a .msml file in quotes", kw.value.span,
                  help='for example simulate(C, model="../reduced/model.msml", steps=24)')
        return set()
    path = resolve(checker.p, kw.value.value)
    own = resolve(checker.p, Path(checker.p.file).name) if checker.p.file and not checker.p.file.startswith("<") \
        else None
    chain = [*_CHECKING, *([own] if own is not None and (not _CHECKING or _CHECKING[-1] != own) else [])]
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.msml")) if path.parent.is_dir() else []
        guess = did_you_mean(path.name, near)
        folder = str(Path(kw.value.value).parent)
        if guess and folder != ".":
            guess = guess.replace("'", f"'{folder}/", 1)
        bag.error("E337", f"no model file '{kw.value.value}' next to this file", kw.value.span,
                  help=guess or "the path is relative to the folder of this file")
        return set()
    if path in chain:
        loop = chain[chain.index(path):] + [path]
        bag.error("E337", "model files use each other as levels in a cycle: " + " -> ".join(p.name for p in loop),
                  kw.value.span, help="a level may use a simpler model, which must not use this one")
        return set()
    try:
        with checking(own) if own is not None and own not in _CHECKING else contextlib.nullcontext():
            other = load_checked(path)
    except MsmlError as exc:
        cycle = [d for d in exc.diagnostics if d.code == "E337" and "cycle" in d.message]
        if cycle:
            bag.error("E337", cycle[0].message, kw.value.span, help=cycle[0].help)
            return set()
        # quote them under the name this file uses for the other one (no absolute paths)
        name = kw.value.value
        diags = [replace(d, file=name) if d.file and Path(d.file).resolve() == path else d for d in exc.diagnostics]
        sources = {(name if Path(k).resolve() == path else k): v for k, v in exc.sources.items()}
        text = format_diagnostics(diags, sources).rstrip().rsplit("\n", 1)[0].rstrip()
        bag.error("E337", f"the model file '{name}' does not check ({len(diags)} "
                  f"error{'s' if len(diags) != 1 else ''} of its own)", kw.value.span,
                  help=f"fix that file first; its errors:\n{text}")
        return set()

    if len(call.args) != 1 or not isinstance(call.args[0], ast.Name):
        bag.error("E337", "simulate(OUTPUT, model=...) takes the name of a state or field of that model",
                  call.span, help=f"states: {', '.join(other.states) or 'none'}")
        return set()
    name = call.args[0]
    fields = [f.name for f in other.pde.fields] if other.pde is not None else []
    if other.time is None or not (other.states or fields):
        bag.error("E337", f"'{kw.value.value}' has no time-dependent ODE or PDE to solve", kw.value.span,
                  help="a model level is the other model's states or fields over its time")
        return set()
    if other.pde is not None and other.states:
        bag.error("E337", f"'{kw.value.value}' mixes states and fields", kw.value.span)
        return set()
    if name.id not in (*other.states, *fields):
        outputs = list(other.states) + fields
        bag.error("E337", f"'{name.id}' is not a {'field' if fields else 'state'} of '{kw.value.value}'",
                  name.span, help=did_you_mean(name.id, outputs) or f"outputs: {', '.join(outputs)}")
        return set()

    coords = {other.time: other.time_range}
    if other.pde is not None:
        if len(other.space) != 1:
            bag.error("E337", f"'{kw.value.value}' has {len(other.space)} space variables; a PDE level covers one",
                      kw.value.span)
            return set()
        coords = {**{k: v for k, v in other.space.items()}, **coords}
    own_coords = {**space, **({time_name: checker.time_range} if time_name else {})}
    for c, (lo, hi) in coords.items():
        if c not in own_coords:
            word = "time" if c == other.time else "space"
            bag.error("E337", f"'{kw.value.value}' is solved over {c} in [{lo:g}, {hi:g}], which this file does "
                      "not declare", kw.value.span, help=f"declare it: {word} {c} in [{lo:g}, {hi:g}]")
            continue
        a, b = own_coords[c]
        if a is not None and (a < lo - 1e-12 or b > hi + 1e-12):
            bag.error("E337", f"this file's {c} in [{a:g}, {b:g}] reaches beyond [{lo:g}, {hi:g}], where "
                      f"'{kw.value.value}' is solved", kw.value.span, help=f"narrow {c} to [{lo:g}, {hi:g}]")
    own_params = set(checker.names_of("param")) | set(checker.constants)
    for p in other.parameters:
        if p.name in dynamics_parameters(other) and p.name not in own_params:
            bag.error("E337", f"the model file '{kw.value.value}' has the parameter '{p.name}', which this file "
                      "does not declare", kw.value.span,
                      help=f"declare it here (param {p.name} ~ ...): the level is calibrated with the others")
    opts = checker._options(ast.Method(call.func, (), call.keywords, call.span),
                            {**_simulate_options(), "model": str, "points": {"type": int, "min": 3}}, "simulate()")
    from msml_dsl.semantics.checker import check_simulate_tolerances

    check_simulate_tolerances(checker, call, opts)
    if "points" in opts and other.pde is None:
        bag.error("E337", "points= sets the grid of a PDE level; the model file has an ODE",
                  next(k for k in call.keywords if k.name.id == "points").span)
    return set(coords)


def dynamics_parameters(other) -> set[str]:
    """The parameters the other model's equations, initial values and conditions use (not its noise)."""
    from msml_dsl.syntax.parser import iter_expr

    names = set()
    for d in other.program.statements:
        parts = ()
        if isinstance(d, (ast.EquationDecl, ast.BoundaryDecl, ast.InitialDecl)):
            parts = (d.lhs, d.rhs)
        elif isinstance(d, ast.InitDecl):
            parts = (d.value,)
        for e in parts:
            names |= {n.id for n in iter_expr(e) if isinstance(n, ast.Name)}
    return names & {p.name for p in other.parameters}


def _simulate_options():
    from msml_dsl.semantics.checker import SIMULATE_OPTIONS

    return SIMULATE_OPTIONS
