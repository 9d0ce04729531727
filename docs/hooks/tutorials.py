"""MkDocs hook: renders a tutorial script (jupytext "percent" format) as a docs page.

A page containing ``<!-- tutorial: tutorials/NN_name.py -->`` gets that marker replaced by
the script: ``# %% [markdown]`` cells become prose, code cells become Python blocks, and
each figure a cell saves (``fig.savefig(IMG / "name.png")``) is shown right after it.
The tutorials stay runnable scripts (tested in ``tests/test_tutorials.py``) and the
docs never drift from them.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = re.compile(r"<!-- tutorial: (\S+\.py) -->")
SAVED_FIGURE = re.compile(r"savefig\(IMG / f?\"([^\"]+\.png)\"")
ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "tutorials" / "img"
OUTPUT = ROOT / "docs" / "tutorials" / "output"  # written by tutorials/run_all.py


def cells(source: str) -> list[tuple[str, str]]:
    """Splits a percent-format script into ``(kind, text)`` cells, kind ``markdown``/``code``."""
    out = []
    for chunk in re.split(r"^# %%", source, flags=re.M):
        if not chunk.strip():
            continue
        header, _, body = chunk.partition("\n")
        if "[markdown]" in header:
            lines = [re.sub(r"^# ?", "", line) for line in body.splitlines()]
            out.append(("markdown", "\n".join(lines).strip()))
        else:
            out.append(("code", body.strip()))
    return out


def figures(code: str) -> list[str]:
    """File names of the figures a code cell saves (an f-string name matches by glob)."""
    names = []
    for name in SAVED_FIGURE.findall(code):
        pattern = re.sub(r"\{[^}]*\}", "*", name)
        names.extend(sorted(p.name for p in IMG.glob(pattern)) if pattern != name else [name])
    return names


def render(source: str) -> str:
    """The markdown of a tutorial script, figures included."""
    parts = []
    for kind, text in cells(source):
        if kind == "markdown":
            parts.append(text)
            continue
        parts.append(f"```python\n{text}\n```")
        parts.extend(f"![{name}](img/{name})" for name in figures(text))
    return "\n\n".join(parts) + "\n"


def output_section(script: Path) -> str:
    """The text the script printed in its last full run, as a closing section."""
    path = OUTPUT / f"{script.stem}.txt"
    if not path.exists():
        return ""
    return (
        "\n## Printed output of the full run\n\n"
        "From `python tutorials/run_all.py` (2 CPU cores; figures above from the same run).\n\n"
        f"```text\n{path.read_text()}```\n"
    )


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (MkDocs hook signature)
    def replace(match):
        script = ROOT / match.group(1)
        return render(script.read_text()) + output_section(script)

    return MARKER.sub(replace, markdown)
