"""Physics-informed networks (PINNs) for PDE models: ``solver pinn(...)``.

Each field is a network of its arguments; every residual, boundary and initial condition is
a named likelihood term at collocation points, and the physical parameters are fitted by MAP,
SVI, a Laplace approximation or NUTS (``docs/pinn.md``).

This package's ``__init__`` imports nothing heavy: ``settings`` is imported by the checker and
must stay free of torch.  The entry point is :func:`msml_dsl.backends.pinn.inference.run_pinn`.
"""
