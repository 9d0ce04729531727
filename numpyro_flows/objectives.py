"""ELBO objectives for mixture guides.

:class:`StratifiedELBO` is the ELBO of a mixture guide computed with draws from every
component (stratified sampling) instead of a sampled component index:

    ELBO = sum_k w_k E_{x ~ q_k}[log p(x) - log q(x)],    q = sum_k w_k q_k.

It equals the ordinary ELBO of ``q``, with lower variance, and its gradient needs no
score-function term: the draws of each component are reparameterised and the weights
``w_k`` appear in closed form. Morningstar et al. (2021), *Automatic Differentiation
Variational Inference with Mixtures*, https://arxiv.org/abs/2003.01687, stratify the same
way (their SIWAE is the importance-weighted version).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.infer import Trace_ELBO
from numpyro.infer.elbo import ELBO

from numpyro_flows.mixture import AutoFlowMixture


class StratifiedELBO(ELBO):
    """The ELBO of an :class:`~numpyro_flows.AutoFlowMixture`, ``num_particles`` draws
    from each component per step (module docstring).

    Pass it to SVI as any NumPyro ELBO::

        svi = SVI(model, AutoFlowMixture(model), optax.adam(3e-3), StratifiedELBO(4))

    For any other guide it is :class:`numpyro.infer.Trace_ELBO` with ``num_particles``.

    Args:
        num_particles: draws per component per step.
    """

    def __init__(self, num_particles: int = 4):
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}.")
        super().__init__(num_particles=int(num_particles))
        self._elbo = Trace_ELBO(num_particles=int(num_particles))

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        if not isinstance(guide, AutoFlowMixture) or guide.prototype_trace is None:
            return self._elbo.loss_with_mutable_state(
                rng_key, param_map, model, guide, *args, **kwargs
            )
        count = guide.num_components
        weights = guide.mixture_weights(param_map)

        def stratum_loss(key, k):
            def component_guide(*args, **kwargs):
                with guide.stratum(k):
                    return guide(*args, **kwargs)

            return self._elbo.loss(key, param_map, model, component_guide, *args, **kwargs)

        losses = jax.vmap(stratum_loss)(jax.random.split(rng_key, count), jnp.arange(count))
        return {"loss": jnp.sum(weights * losses), "mutable_state": None}


__all__ = ["StratifiedELBO"]
