"""Runs every tutorial in full: refreshes the figures in ``docs/tutorials/img/`` and the
printed output the docs pages show (``docs/tutorials/output/NN_name.txt``).

    python tutorials/run_all.py               # all of them (a few minutes on 2 cores)
    python tutorials/run_all.py 02_neutra     # one
"""

import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "docs" / "tutorials" / "output"
PROGRESS = re.compile(r"it/s|s/it|%\|")  # NumPyro/tqdm progress bars


def printed_output(stdout: str) -> str:
    lines = [line.split("\r")[-1].rstrip() for line in stdout.splitlines()]
    kept = [line for line in lines if not PROGRESS.search(line) and "figures in" not in line]
    return "\n".join(kept).strip() + "\n"


def main(names):
    scripts = sorted(HERE.glob("[0-9][0-9]_*.py"))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for script in scripts:
        if names and script.stem not in names:
            continue
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=False
        )
        if done.returncode:
            sys.exit(f"{script.name} failed:\n{done.stderr[-3000:]}")
        (OUTPUT / f"{script.stem}.txt").write_text(printed_output(done.stdout))
        print(f"{script.name}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
