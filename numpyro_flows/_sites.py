"""A model's latent sample sites, read from one seeded run, and the clear error for a
discrete one: shared by the guides' set-up, ``fit_guide`` and the non-centring finder."""

from __future__ import annotations

from numpyro import handlers, validation_enabled


def latent_sites(model, args: tuple, kwargs: dict, substitute_fn=None) -> dict | None:
    """``{name: site}`` of the unobserved sample sites of one run of ``model``, in order.

    The run is seeded, records nothing outside, and has argument validation off: only the
    sites' distributions and shapes are read, and a value where the model's computation
    blows up (a NaN loc) must not make a valid model fail here. ``substitute_fn`` (an
    init strategy) sets the values; by default they are prior draws.

    Returns:
        The sites, or ``None`` when the model cannot be run this way (its own set-up
        elsewhere reports that with the model).
    """
    model = handlers.seed(model, 0)
    if substitute_fn is not None:
        model = handlers.substitute(model, substitute_fn=substitute_fn)
    try:
        with handlers.block(), validation_enabled(False):
            trace = handlers.trace(model).get_trace(*args, **kwargs)
    except Exception:  # noqa: BLE001 - left to the caller's own set-up to report
        return None
    return {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def reject_discrete_latents(sites: dict, owner: str) -> None:
    """Raises a ``ValueError`` naming the first discrete site and the fix."""
    for name, site in sites.items():
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"{owner} cannot guide the discrete latent site '{name}': flow guides are "
                "continuous. Marginalise it out of the model (sum over its values with "
                "numpyro.factor, or mark it infer={'enumerate': 'parallel'} and use "
                "TraceEnum_ELBO with a guide that hides it via numpyro.handlers.block)."
            )
