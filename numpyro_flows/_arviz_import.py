"""Imports ArviZ lazily (it is slow to import) and without its once-a-day notice about
the ArviZ 1.0 refactor (this package pins arviz < 1)."""

from __future__ import annotations

import warnings


def import_arviz():
    with warnings.catch_warnings():
        # The notice starts with a newline: \s* (a plain .* stops at it).
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor")
        import arviz

    return arviz
