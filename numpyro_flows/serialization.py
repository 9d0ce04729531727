"""Save and load a trained flow guide: parameters and configuration in one file.

The file is a pickle of the guide (its flow architecture and the layout of the latent
sites, without the model or its data) and the parameters as NumPy arrays. A loaded guide
samples the latent sites without the model::

    save_guide("guide.pkl", guide, params)
    guide, params = load_guide("guide.pkl")
    draws = guide.sample_posterior(jax.random.key(0), params, sample_shape=(1000,))

Attach the model (``load_guide(path, model=model)``) for ``Predictive``, deterministic
sites, diagnostics or NeuTra. Only load files you trust: unpickling runs code.
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile
from pathlib import Path

import jax
import numpy as np

from numpyro_flows.autoguides import AutoFlow

FORMAT = "numpyro_flows.guide"
VERSION = 1


def atomic_write_bytes(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a
    rename, so an existing file is never left half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_guide(path, guide: AutoFlow, params: dict) -> None:
    """Writes a trained guide and its parameters to ``path`` (atomically).

    Args:
        path: destination file.
        guide: a trained :class:`~numpyro_flows.autoguides.AutoFlow` (or preset).
        params: its parameters, e.g. ``svi.get_params(state)``.
    """
    if not isinstance(guide, AutoFlow):
        raise TypeError(
            f"save_guide takes numpyro_flows guides (AutoFlow and presets), got "
            f"{type(guide).__name__}; for other guides pickle the params yourself."
        )
    if guide._latent_layout is None:
        raise ValueError(
            "The guide has not seen the model yet; train it (svi.init/svi.run) before saving."
        )
    # The file must load without the model's module: save a copy without the model.
    portable = copy.copy(guide)
    portable.model = None
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "guide": portable,
        "params": jax.tree.map(np.asarray, params),
    }
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def load_guide(path, model=None):
    """Reads a guide written by :func:`save_guide`; returns ``(guide, params)``.

    Args:
        path: the file.
        model: optionally the model, for ``Predictive``, diagnostics and NeuTra (the guide
            sets itself up with the model's arguments the first time it is called).
    """
    with open(path, "rb") as f:
        payload = pickle.load(f)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a numpyro_flows guide file.")
    if payload["version"] > VERSION:
        raise ValueError(
            f"{path} was written by a newer numpyro_flows (format version "
            f"{payload['version']} > {VERSION}); upgrade numpyro_flows to load it."
        )
    guide = payload["guide"]
    if model is not None:
        guide.model = model
    return guide, payload["params"]


__all__ = ["atomic_write_bytes", "load_guide", "save_guide"]
