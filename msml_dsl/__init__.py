"""msml: a modeling language for known physics, unknown parameters and noisy data.

>>> import msml_dsl
>>> model = msml_dsl.compile_file("models/lotka_volterra/model.msml")   # doctest: +SKIP
>>> fit = model.run()                                                    # doctest: +SKIP
"""

from msml_dsl.version import __version__

__all__ = ["__version__", "compile_file", "compile_source", "check_file", "MsmlError"]


def __getattr__(name):
    # Heavy modules (torch, pyro) load only when the API is used, so `msml check` starts fast.
    if name in ("compile_file", "compile_source", "check_file", "CompiledModel", "Fit", "MapFit"):
        from msml_dsl import api

        return getattr(api, name)
    if name == "MsmlError":
        from msml_dsl.errors import MsmlError

        return MsmlError
    raise AttributeError(name)
