"""Compiler options for the functions the package compiles itself.

On the CPU, XLA's backend compile is most of a guide's set-up + compile (80-89% at the
issue-17 protocol: LLVM's optimisation and machine code, the fusion emitters); the rest is
tracing and lowering. XLA's backend optimisation level 1 (of 0-3) cut it by 15-45% at an
unchanged step time on the guides measured (``python -m benchmarks.compile_anatomy``), and
a second ``fit_guide`` call's set-up by 1.3-1.4 s on eight schools and a logistic
regression (the mixture guide of a two-mode posterior compiles as long either way).

``package_jit`` applies it to the functions ``fit_guide`` and the diagnostics compile (the
mode search, the training chunk, the PSIS draws) and to the training epoch of ``fit`` for
vector flows (image flows keep the default level). A user's own ``jax.jit`` (and
NumPyro's, in ``svi.run``) is untouched; a user may set the level for the whole process
with ``XLA_FLAGS=--xla_backend_optimization_level=1``.
"""

from __future__ import annotations

import inspect

import jax

CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
# An older jax.jit without compiler options: the functions compile as usual.
_JIT_TAKES_OPTIONS = "compiler_options" in inspect.signature(jax.jit).parameters


def package_jit(fn=None, **jit_kwargs):
    """``jax.jit`` with :data:`CPU_COMPILER_OPTIONS` on the CPU (other backends: none).

    Usable as ``package_jit(fn)`` or as a decorator, with or without ``jax.jit`` keywords.
    """
    if fn is None:
        return lambda f: package_jit(f, **jit_kwargs)
    if _JIT_TAKES_OPTIONS and jax.default_backend() == "cpu":
        jit_kwargs = {"compiler_options": CPU_COMPILER_OPTIONS, **jit_kwargs}
    return jax.jit(fn, **jit_kwargs)
