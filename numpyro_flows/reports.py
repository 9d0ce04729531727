"""Run reports: is a fit or an MCMC run good enough to use, and if not, what to do.

* :func:`khat_verdict` reads a guide's PSIS k-hat (Vehtari et al. 2024, *Pareto Smoothed
  Importance Sampling*, https://arxiv.org/abs/1507.02646): ``"ok"`` (k-hat <= 0.5),
  ``"doubtful (0.5-0.7)"``, ``"bad (> 0.7)"``, or ``"failed: ..."`` when the weights are
  degenerate (a non-finite k-hat, all ratios equal, an ESS of about 1). Each verdict
  starts with one of ``ok``, ``doubtful``, ``bad``, ``failed``.
* :func:`mcmc_report` summarises a run of NUTS (plain or NeuTra) grouped by chain:
  divergences, the largest rank-normalised split r-hat and the smallest bulk and tail
  ESS (Vehtari et al. 2021, *Rank-normalization, folding, and localization: an improved
  R-hat*, https://arxiv.org/abs/1903.08008, computed with ArviZ), and
  :meth:`MCMCReport.problems` lists what is wrong with the fix for each.

Thresholds (module constants): ``RHAT_MAX = 1.01``; ``ESS_PER_CHAIN_MIN = 100`` (bulk and
tail ESS of at least 100 per chain, 400 for four chains, as Vehtari et al. 2021
recommend); any divergence is a problem.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import NamedTuple

import numpy as np

from numpyro_flows.diagnostics import DEGENERATE_ESS, KHAT_BAD, KHAT_GOOD

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100


class RunReportWarning(UserWarning):
    """A fit or an MCMC run whose diagnostics say it cannot be trusted as it is.

    Filter it by class (``warnings.filterwarnings("ignore", category=RunReportWarning)``)
    where short, deliberately rough runs are expected.
    """


VERDICT_OK = "ok"
VERDICT_DOUBTFUL = f"doubtful ({KHAT_GOOD}-{KHAT_BAD})"
VERDICT_BAD = f"bad (> {KHAT_BAD})"


def khat_verdict(
    khat: float | None, *, ess: float | None = None, failure: str | None = None
) -> str:
    """The verdict on a guide's PSIS k-hat, in words.

    Args:
        khat: the k-hat (e.g. ``psis_diagnostic(...).khat``).
        ess: optionally the importance-sampling ESS; about 1 is a failure whatever k-hat
            says.
        failure: optionally ``PSISResult.failure``, the reason the weights are degenerate.

    Returns:
        ``"ok"`` (k-hat <= 0.5), ``"doubtful (0.5-0.7)"``, ``"bad (> 0.7)"``, or
        ``"failed: degenerate weights: ..."`` with what happened. Never ``"ok"`` for a
        non-finite k-hat.
    """
    if failure:
        return f"failed: degenerate weights: {failure}"
    if khat is None or not math.isfinite(float(khat)):
        return (
            f"failed: degenerate weights: k-hat is {khat}, so the importance weights say "
            "nothing about the fit"
        )
    if ess is not None and ess < DEGENERATE_ESS:
        return (
            f"failed: degenerate weights: ESS {ess:.2f}, one draw carries all the weight: "
            "the guide misses the posterior"
        )
    if khat > KHAT_BAD:
        return VERDICT_BAD
    if khat > KHAT_GOOD:
        return VERDICT_DOUBTFUL
    return VERDICT_OK


def verdict_is_bad(verdict: str) -> bool:
    """Whether a :func:`khat_verdict` means the guide's draws should not be used."""
    return verdict.startswith(("bad", "failed"))


class MCMCReport(NamedTuple):
    """What :func:`mcmc_report` returns; ``str(report)`` is a short block for a terminal.

    Attributes:
        num_divergences: divergent transitions over all chains (``None``: not recorded).
        max_rhat: the largest rank-normalised split r-hat over all sites and elements.
        min_ess_bulk: the smallest bulk ESS.
        min_ess_tail: the smallest tail ESS.
        num_chains: number of chains.
        num_samples: draws per chain.
        max_rhat_site: the site with the largest r-hat.
        min_ess_site: the site with the smallest (bulk or tail) ESS.
    """

    num_divergences: int | None
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    num_chains: int = 1
    num_samples: int = 0
    max_rhat_site: str | None = None
    min_ess_site: str | None = None

    @property
    def min_ess(self) -> float:
        """The ESS threshold: ``ESS_PER_CHAIN_MIN`` per chain."""
        return float(ESS_PER_CHAIN_MIN * self.num_chains)

    def problems(self) -> list[str]:
        """What is wrong with the run, one line each with its fix (empty: nothing found)."""
        found = []
        if self.num_divergences:
            found.append(
                f"{self.num_divergences} divergent transitions: raise target_accept_prob "
                "(e.g. 0.95), or improve the geometry (NeuTra with a guide from fit_guide; "
                "with NeuTra already, train the guide longer)"
            )
        if not math.isnan(self.max_rhat) and self.max_rhat > RHAT_MAX:
            found.append(
                f"max r-hat {self.max_rhat:.3f}{_site(self.max_rhat_site)} > {RHAT_MAX}: the "
                "chains disagree; run longer chains (more warmup and samples)"
            )
        for kind, value in (("bulk", self.min_ess_bulk), ("tail", self.min_ess_tail)):
            if not math.isnan(value) and value < self.min_ess:
                use = "means and variances" if kind == "bulk" else "quantiles and intervals"
                found.append(
                    f"min {kind} ESS {value:.0f}{_site(self.min_ess_site)} < {self.min_ess:.0f} "
                    f"({ESS_PER_CHAIN_MIN} per chain): too few effective draws for {use}; "
                    "run more or longer chains"
                )
        return found

    def __str__(self) -> str:
        problems = self.problems()
        divergences = "not recorded" if self.num_divergences is None else self.num_divergences
        lines = [
            f"divergences: {divergences}{_flag(bool(self.num_divergences))}",
            f"max r-hat: {self.max_rhat:.3f}{_flag(self.max_rhat > RHAT_MAX)}",
            f"min bulk ESS: {self.min_ess_bulk:.0f}{_flag(self.min_ess_bulk < self.min_ess)}",
            f"min tail ESS: {self.min_ess_tail:.0f}{_flag(self.min_ess_tail < self.min_ess)}",
        ]
        lines += [f"problem: {p}" for p in problems]
        return "\n".join(lines)


def _flag(bad: bool) -> str:
    return "  << BAD" if bad else "  (ok)"


def _site(name: str | None) -> str:
    return "" if name is None else f" (site '{name}')"


def mcmc_report(samples: dict, sample_stats: dict) -> MCMCReport:
    """Divergences, r-hat and bulk/tail ESS of an MCMC run, with the problems they show.

    Args:
        samples: ``{site: array (num_chains, num_samples, ...)}``, e.g.
            ``mcmc.get_samples(group_by_chain=True)`` or ``NeuTraResult.samples``.
        sample_stats: NUTS statistics grouped by chain; ``diverging``
            ``(num_chains, num_samples)`` is used when present (e.g.
            ``NeuTraResult.sample_stats`` or
            :func:`numpyro_flows.neutra.nuts_sample_stats`).

    Returns:
        An :class:`MCMCReport`; ``report.problems()`` is empty for a run that passes.

    Example::

        report = mcmc_report(result.samples, result.sample_stats)
        print(report)
        if report.problems():
            ...
    """
    from numpyro_flows._arviz_import import import_arviz

    arrays = {name: np.asarray(value) for name, value in samples.items()}
    if not arrays:
        raise ValueError("samples is empty: pass {site: array (num_chains, num_samples, ...)}.")
    for name, value in arrays.items():
        if value.ndim < 2:
            raise ValueError(
                f"samples['{name}'] has shape {value.shape}; mcmc_report needs draws grouped "
                "by chain, (num_chains, num_samples, ...): use "
                "mcmc.get_samples(group_by_chain=True)."
            )
    num_chains, num_samples = next(iter(arrays.values())).shape[:2]
    az = import_arviz()
    if num_chains == 1:
        # ArviZ needs two chains for r-hat: split the one chain in halves, as split r-hat
        # does anyway.
        half = num_samples // 2
        rhat_arrays = {
            name: np.stack([value[0, :half], value[0, half : 2 * half]])
            for name, value in arrays.items()
        }
    else:
        rhat_arrays = arrays
    arviz_logger = logging.getLogger("arviz")
    level = arviz_logger.level
    with warnings.catch_warnings():
        # Constant sites (NaN r-hat) and short chains make ArviZ warn; NaNs are skipped.
        warnings.simplefilter("ignore", RuntimeWarning)
        arviz_logger.setLevel(logging.ERROR)
        try:
            rhat = az.rhat(az.from_dict(posterior=rhat_arrays), method="rank")
            posterior = az.from_dict(posterior=arrays)
            bulk = az.ess(posterior, method="bulk")
            tail = az.ess(posterior, method="tail")
        finally:
            arviz_logger.setLevel(level)
    max_rhat, rhat_site = _extreme(rhat, np.nanmax)
    ess_bulk, bulk_site = _extreme(bulk, np.nanmin)
    ess_tail, tail_site = _extreme(tail, np.nanmin)
    diverging = sample_stats.get("diverging") if sample_stats is not None else None
    return MCMCReport(
        num_divergences=None if diverging is None else int(np.sum(diverging)),
        max_rhat=max_rhat,
        min_ess_bulk=ess_bulk,
        min_ess_tail=ess_tail,
        num_chains=int(num_chains),
        num_samples=int(num_samples),
        max_rhat_site=rhat_site,
        min_ess_site=bulk_site if ess_bulk <= ess_tail else tail_site,
    )


def _extreme(dataset, reduce) -> tuple[float, str | None]:
    """The NaN-ignoring max or min over every variable of an ArviZ dataset, and where."""
    per_site = {}
    for name in dataset.data_vars:
        values = np.asarray(dataset[name].values, np.float64)
        if values.size and not np.all(np.isnan(values)):  # NaN: e.g. a constant site
            per_site[str(name)] = float(reduce(values))
    if not per_site:
        return math.nan, None
    best = float(reduce(list(per_site.values())))
    return best, next(name for name, value in per_site.items() if value == best)


__all__ = [
    "RunReportWarning",
    "ESS_PER_CHAIN_MIN",
    "MCMCReport",
    "RHAT_MAX",
    "khat_verdict",
    "mcmc_report",
    "verdict_is_bad",
]
