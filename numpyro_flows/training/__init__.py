"""Maximum-likelihood fitting of flows to data.

Two levels, in the style of optax and BlackJAX:

* :mod:`~numpyro_flows.training.objective`: :func:`maximum_likelihood` returns pure
  ``init``/``step``/``loss`` functions over an explicit :class:`TrainState`; ``step`` is
  jittable and runs under :func:`jax.lax.scan`.
* :mod:`~numpyro_flows.training.loop`: :func:`fit` is the loop a user wants (validation
  split, shuffled minibatches, early stopping, ActNorm data-dependent initialisation,
  BatchNorm running statistics, a progress bar, a guard against non-finite losses); its
  diagnostics come back in a :class:`FitResult`.

:mod:`~numpyro_flows.training.data` checks the data given to :func:`fit` and splits off a
validation set. Every public name is importable from ``numpyro_flows.training``.
"""

from numpyro_flows.layers import sublayers
from numpyro_flows.training.data import check_context, check_training_data, train_val_split
from numpyro_flows.training.loop import (
    FitResult,
    default_optimizer,
    fit,
    is_affine_in_one_dimension,
)
from numpyro_flows.training.objective import (
    MaximumLikelihood,
    StepInfo,
    TrainState,
    maximum_likelihood,
    negative_log_likelihood,
)

__all__ = [
    "FitResult",
    "MaximumLikelihood",
    "StepInfo",
    "TrainState",
    "check_context",
    "check_training_data",
    "default_optimizer",
    "fit",
    "is_affine_in_one_dimension",
    "maximum_likelihood",
    "negative_log_likelihood",
    "sublayers",
    "train_val_split",
]
