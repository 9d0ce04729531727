"""Copies posteriordb data and reference summaries into the repository (run once).

    python -m benchmarks.posteriordb.prepare /path/to/shared/data/posteriordb

For each posterior it writes ``data/<name>.data.json.gz`` (the model's inputs) and
``data/<name>.reference.json`` (per scalar parameter: the mean and sd of the 10 000
gold-standard reference draws made by the posteriordb authors with Stan's NUTS), so the
benchmark needs neither the shared folder nor the 12 MB of draws. Licence of the data
and draws: BSD-3 (posteriordb); see ``data/LICENCE.posteriordb.md``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np

POSTERIORS = (
    "eight_schools-eight_schools_noncentered",
    "gp_pois_regr-gp_pois_regr",
    "diamonds-diamonds",
    "kilpisjarvi_mod-kilpisjarvi",
    "garch-garch11",
    "arK-arK",
)
HERE = Path(__file__).parent / "data"


def summarise(draws: list[dict]) -> dict:
    names = list(draws[0])
    summary = {}
    for name in names:
        values = np.concatenate([np.asarray(chain[name], np.float64) for chain in draws])
        summary[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1))}
    return {"num_draws": int(sum(len(c[names[0]]) for c in draws)), "parameters": summary}


def main(source: str) -> None:
    source = Path(source)
    HERE.mkdir(exist_ok=True)
    shutil.copy(source / "LICENCE.posteriordb.md", HERE / "LICENCE.posteriordb.md")
    for name in POSTERIORS:
        data = json.loads((source / name / "data.json").read_text())
        with gzip.open(HERE / f"{name}.data.json.gz", "wt") as f:
            json.dump(data, f)
        draws = json.loads((source / name / "reference_draws.json").read_text())
        info = json.loads((source / name / "reference_draws_info.json").read_text())
        reference = summarise(draws)
        reference["stan_settings"] = info["inference"]
        (HERE / f"{name}.reference.json").write_text(json.dumps(reference, indent=1))
        print(f"{name}: {len(reference['parameters'])} parameters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/posteriordb")
