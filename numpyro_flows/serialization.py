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
import pickle

import jax
import numpy as np

from numpyro_flows._io import write_bytes_atomically
from numpyro_flows.autoguides import AutoFlow
from numpyro_flows.hybrid import AutoHybridFlow

FORMAT = "numpyro_flows.guide"
VERSION = 1


def atomic_write_bytes(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a
    rename, so an existing file is never left half-written; the file gets the mode the
    umask gives a new file."""
    write_bytes_atomically(path, data)


def save_guide(path, guide: AutoFlow, params: dict) -> None:
    """Writes a trained guide and its parameters to ``path`` (atomically).

    Args:
        path: destination file.
        guide: a trained :class:`~numpyro_flows.autoguides.AutoFlow` (or preset) or
            :class:`~numpyro_flows.AutoHybridFlow` (which, loaded without its model, draws
            the globals; the locals of given rows need the model, which reads the rows).
        params: its parameters, e.g. ``svi.get_params(state)``.
    """
    if not isinstance(guide, (AutoFlow, AutoHybridFlow)):
        raise TypeError(
            f"save_guide takes numpyro_flows guides (AutoFlow and presets, AutoHybridFlow), "
            f"got {type(guide).__name__}; for other guides pickle the params yourself."
        )
    set_up = guide._is_set_up if isinstance(guide, AutoHybridFlow) else guide._latent_layout
    if not set_up:
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
        content = f.read()
    if not content:
        raise ValueError(
            f"{path} is empty: it is not a numpyro_flows guide file (or its writing was cut "
            "off). Save the guide again with save_guide."
        )
    try:
        payload = pickle.loads(content)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"{path} refers to code that cannot be imported here ({type(error).__name__}: "
            f"{error}): it was saved with another numpyro_flows version, or with a custom "
            "flow, layer or activation whose module must be importable when loading."
        ) from error
    except Exception as error:  # any corruption: EOFError, UnpicklingError, KeyError, ...
        raise ValueError(
            f"{path} is damaged or not a numpyro_flows guide file: unpickling it failed "
            f"({type(error).__name__}: {error}). A truncated copy or a file of another kind "
            "gives this; save the guide again with save_guide."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a numpyro_flows guide file: it holds a pickled "
            f"{type(payload).__name__}, not what save_guide writes."
        )
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
