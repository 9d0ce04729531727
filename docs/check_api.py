"""Fails when a public symbol is undocumented or missing from the API reference.

Public symbols are the names in ``__all__`` of the package and of its modules. Each must
have a docstring, its defining module must be rendered by a ``::: module`` line in
``docs/api/*.md``, and every public method a class defines must have a docstring too
(NumPyro ``Transform`` protocol methods excepted: they are documented once, in
``numpyro_flows.bijections.base``). Run from the repository root:

    python docs/check_api.py
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import numpyro_flows

PROTOCOL = {
    "tree_flatten",
    "tree_unflatten",
    "call_with_intermediates",
    "log_abs_det_jacobian",
    "forward_shape",
    "inverse_shape",
    "inv",
    "domain",
    "codomain",
    "sign",
    "eq",
}


def documented_modules(api_dir: Path) -> set[str]:
    names = set()
    for page in api_dir.glob("*.md"):
        names.update(re.findall(r"^:::\s+([\w.]+)", page.read_text(), flags=re.M))
    return names


def public_modules():
    yield numpyro_flows
    for info in pkgutil.walk_packages(numpyro_flows.__path__, "numpyro_flows."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            yield importlib.import_module(info.name)


def main() -> int:
    rendered = documented_modules(Path(__file__).parent / "api")
    problems = []
    for module in public_modules():
        if not inspect.getdoc(module):
            problems.append(f"module {module.__name__} has no docstring")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            where = getattr(obj, "__module__", module.__name__)
            label = f"{where}.{name}"
            if not (inspect.isclass(obj) or callable(obj)):
                continue  # constants are documented in their module's docstring
            if not inspect.getdoc(obj):
                problems.append(f"{label} has no docstring")
            if where.startswith("numpyro_flows") and where not in rendered:
                problems.append(f"{label}: module {where} is not in docs/api/*.md")
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") or attr in PROTOCOL:
                        continue
                    if callable(value) or isinstance(value, property | classmethod | staticmethod):
                        if not inspect.getdoc(getattr(obj, attr)):
                            problems.append(f"{label}.{attr} has no docstring")
    for problem in sorted(set(problems)):
        print(problem)
    print(f"check_api: {len(set(problems))} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
