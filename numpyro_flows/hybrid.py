"""``AutoHybridFlow``: a flow guide for models with local latent variables.

A model whose plate carries a latent per datum or per group, subsampled with
``numpyro.plate(name, N, subsample_size=B)``, has two kinds of latents: *global* ones
(outside every subsampled plate) and *local* ones (one set per row of a subsampled plate).
The guide is

    q(globals) q(locals | globals, data) = q_g(g) prod_i q_l(l_i | g, y_i)

* ``q_g``: a flow over the global latents, as :class:`~numpyro_flows.AutoFlow`
  (``g = loc + scale * flow(z)``, ``z ~ Normal(0, I)``);
* ``q_l``, for each subsampled plate: a *conditional* flow over one row's local latents
  (all local sites of the plate, flattened per row), ``l_i = m(h_i) + s(h_i) * flow(z_i;
  h_i)``, with ``h_i = encoder(y_i, g)``: an MLP of the row's observed values (every
  observed site in the plate, read from the model at each call, so the model's own
  subsampling picks the rows) and the sampled globals.

Its parameters (two flows and an encoder) do not grow with ``N``: amortised inference, as
in a VAE's encoder (Kingma and Welling 2014, https://arxiv.org/abs/1312.6114), with the
global-local split of Hoffman et al. (2013), https://arxiv.org/abs/1206.7051. Because the
locals are conditioned on the sampled globals, the guide keeps the dependence between them
that a mean-field guide (``AutoNormal``) drops: in a hierarchical model, a group's effect
scales with the population spread.

Since nothing in it is per row, a trained guide applies to other data of the same model:
new groups, or a data set of another size (its plates are sized by the model on each
call); the encoder's input standardisation is fixed when the guide first meets data (the
mean and sd of that subsample's observed values, kept with the guide and in its file).

Everything SVI does works, including subsampling (the guide's plates are the model's, so
``Trace_ELBO`` scales both by ``N / B``); ``Predictive`` and
:meth:`AutoHybridFlow.sample_posterior` (globals, and locals of the rows asked for);
:func:`numpyro_flows.psis_diagnostic` and :func:`numpyro_flows.to_inference_data` on the
full data; :func:`numpyro_flows.save_guide`;
:func:`numpyro_flows.distributed.data_parallel_svi`.

Constants: ``FEATURE_SD_FLOOR`` (1e-6), below which an observed feature's spread counts as
zero and it is not rescaled; ``DRAW_BATCH_VALUES`` (2^20), about how many rows in all
:meth:`AutoHybridFlow.importance_draws` evaluates at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import AffineTransform, IndependentTransform, biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.infer.autoguide import AutoGuide
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import log_density

from numpyro_flows import flows
from numpyro_flows._guide_support import (
    ensure_setup,
    latent_sites,
    picklable_or_none,
    reject_discrete_latents,
)
from numpyro_flows._param_packing import packed_param, param_layouts
from numpyro_flows.bijections.base import conditioner_input
from numpyro_flows.flows import Flow
from numpyro_flows.nn.common import dense_init, dense_stack_init, get_activation

# An observed feature whose spread over the set-up rows is below this is only centred.
FEATURE_SD_FLOOR = 1e-6

# importance_draws evaluates draws in batches of about this many rows in all (memory).
DRAW_BATCH_VALUES = 2**20


@dataclass(frozen=True)
class _SiteSlot:
    """Where one latent site sits in its part's flat vector (per row for a local)."""

    name: str
    offset: int
    size: int
    shape: tuple[int, ...]  # the unconstrained value's shape (a local's without its rows)
    axis: int  # a local's row axis in its unconstrained value (negative); 0 for globals


@dataclass(frozen=True)
class _ObservedSlot:
    """An observed site of a subsampled plate, read per row as encoder input."""

    name: str
    axis: int  # the row axis of the value (negative)


@dataclass(frozen=True)
class _LocalPart:
    """One subsampled plate: its local sites, observed sites and sizes."""

    plate: str
    dim: int  # the plate's dim (negative)
    sites: tuple[_SiteSlot, ...]
    observed: tuple[_ObservedSlot, ...]
    latent_dim: int  # local values per row
    feature_dim: int  # observed values (and local_inputs) per row


class AutoHybridFlow(AutoGuide):
    """A flow over the global latents and an amortised conditional flow over each
    subsampled plate's local latents.

    Args:
        model: a NumPyro model whose local latents sit in subsampled plates
            (``numpyro.plate(name, N, subsample_size=B)``).
        global_flow: the :class:`~numpyro_flows.flows.Flow` over the global latents
            (default :func:`numpyro_flows.flows.iaf`, three layers).
        local_flow: the conditional flow over one row's local latents (default one
            :func:`numpyro_flows.flows.iaf` layer: on two hierarchical models as accurate
            as a neural spline at half its step time, see ``benchmarks/hybrid.py``); it is
            initialised with ``context_dim`` = the encoder's width.
        encoder: hidden widths of the encoder MLP (default two layers of
            ``max(2 * (inputs), 32)``, at most 256); its input is a row's observed values
            (standardised by the set-up subsample's mean and sd) and the global latents
            standardised by the global affine layer, ``(g - loc) / scale``; its last hidden
            layer is the local flow's context, and its head gives each row's location and
            scale to first order in those globals (per-row slopes).
        local_inputs: extra per-row inputs of the encoder, for covariates the model does
            not observe (a regression's ``x``): ``{plate: fn}`` or, with one subsampled
            plate, ``fn``; ``fn(idx, *args, **kwargs)`` returns an array ``(len(idx), F)``
            for the rows ``idx`` of the plate.
        nonlinearity: the encoder's activation.
        prefix: prefix of the param sites.
        init_loc_fn: a NumPyro init strategy: the globals start there, the locals at the
            mean over the set-up subsample of where it puts them.
        init_scale: initial scale of every latent (as ``AutoNormal``'s ``init_scale``).
        create_plates: as in :class:`~numpyro.infer.autoguide.AutoGuide`.

    Example::

        def model(y):                      # y: (num_groups, obs_per_group)
            mu = numpyro.sample("mu", dist.Normal(0, 5))
            tau = numpyro.sample("tau", dist.HalfNormal(5))
            with numpyro.plate("groups", len(y), subsample_size=512) as idx:
                theta = numpyro.sample("theta", dist.Normal(mu, tau))
                numpyro.sample("y", dist.Normal(theta[:, None], 1).to_event(1), obs=y[idx])

        guide = AutoHybridFlow(model)
        svi = SVI(model, guide, optax.adam(1e-3), Trace_ELBO())
        result = svi.run(jax.random.key(0), 5000, y)
        draws = guide.sample_posterior(jax.random.key(1), result.params, y,
                                       sample_shape=(1000,), rows=jnp.arange(10))
    """

    def __init__(
        self,
        model: Callable,
        *,
        global_flow: Flow | None = None,
        local_flow: Flow | None = None,
        encoder: Sequence[int] | None = None,
        local_inputs: Callable | Mapping[str, Callable] | None = None,
        nonlinearity: str | Callable = "elu",
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ):
        for name, flow in (("global_flow", global_flow), ("local_flow", local_flow)):
            if flow is not None and not isinstance(flow, Flow):
                raise TypeError(
                    f"{name} must be a numpyro_flows Flow (e.g. numpyro_flows.flows.iaf()), "
                    f"got {type(flow).__name__}."
                )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}.")
        if encoder is not None:
            encoder = tuple(int(width) for width in encoder)
            if not encoder or min(encoder) < 1:
                raise ValueError(
                    f"encoder must be a non-empty list of positive hidden widths, got {encoder}."
                )
        if local_inputs is not None and not (
            callable(local_inputs) or isinstance(local_inputs, Mapping)
        ):
            raise TypeError(
                "local_inputs must be fn(idx, *args, **kwargs) -> (len(idx), F) or a dict "
                f"{{plate name: fn}}, got {type(local_inputs).__name__}."
            )
        get_activation(nonlinearity)
        self.global_flow = flows.iaf() if global_flow is None else global_flow
        self.local_flow = flows.iaf(1) if local_flow is None else local_flow
        self.encoder = encoder
        self.local_inputs = local_inputs
        self.nonlinearity = nonlinearity
        self._init_scale = float(init_scale)
        self._globals: tuple[_SiteSlot, ...] = ()
        self._locals: dict[str, _LocalPart] = {}
        self._supports: dict = {}
        self._event_dims: dict[str, int] = {}
        self._feature_stats: dict = {}  # {plate: (mean, sd)} of the set-up rows' features
        self._site_frames: dict[str, tuple[str, ...]] = {}  # the plates of each latent site
        self._is_set_up = False
        self._globals_only = False  # set while sample_posterior draws the globals alone
        self._global_init = None
        self._local_init: dict = {}
        self._row_numbers: dict = {}  # {plate: rows} while drawing given rows
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn, create_plates=create_plates)

    # ------------------------------------------------------------------ set-up
    def _setup_prototype(self, *args, **kwargs):
        sites = latent_sites(self.model, args, kwargs, substitute_fn=self.init_loc_fn)
        if sites is not None:
            reject_discrete_latents(sites, type(self).__name__)
        super()._setup_prototype(*args, **kwargs)
        trace, full = self.prototype_trace, self._prototype_frame_full_sizes
        subsampled = {
            frame.name: frame
            for site in trace.values()
            if site["type"] == "sample"
            for frame in site["cond_indep_stack"]
            if frame.name in full and frame.size != full[frame.name]
        }
        global_slots, local_sites = [], {name: [] for name in subsampled}
        offset = 0
        for name, init in self._init_locs.items():
            site = trace[name]
            self._supports[name] = site["fn"].support
            self._site_frames[name] = tuple(f.name for f in site["cond_indep_stack"])
            # The unconstrained value's event dims (a simplex loses one coordinate, a
            # Cholesky factor is flattened).
            event_dim = site["fn"].event_dim + jnp.ndim(init) - jnp.ndim(site["value"])
            self._event_dims[name] = site["fn"].event_dim
            frames = [f for f in site["cond_indep_stack"] if f.name in subsampled]
            if len(frames) > 1:
                raise ValueError(_nested_message(name, frames))
            if not frames:
                size = int(np.prod(jnp.shape(init)))
                global_slots.append(_SiteSlot(name, offset, size, tuple(jnp.shape(init)), 0))
                offset += size
            else:
                local_sites[frames[0].name].append((name, init, frames[0].dim - event_dim))
        self._globals = tuple(global_slots)
        self._global_init = (
            jnp.concatenate([jnp.ravel(self._init_locs[s.name]) for s in global_slots])
            if global_slots
            else None
        )

        self._locals = {}
        for plate, members in local_sites.items():
            if members:
                self._locals[plate] = self._local_part(subsampled[plate], members, args, kwargs)
        self._check_local_inputs()
        self._is_set_up = True

    def _local_part(self, frame, members, args, kwargs) -> _LocalPart:
        slots, offset, rows = [], 0, frame.size
        per_row_init = []
        for name, init, axis in members:
            moved = jnp.moveaxis(init, axis, 0)
            shape = tuple(moved.shape[1:])
            size = int(np.prod(shape))
            slots.append(_SiteSlot(name, offset, size, shape, axis))
            per_row_init.append(moved.reshape(rows, size))
            offset += size
        # The locals start at the mean over the set-up rows of where init_loc_fn puts them.
        self._local_init[frame.name] = jnp.mean(jnp.concatenate(per_row_init, -1), 0)

        observed = []
        for name, site in self.prototype_trace.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            if isinstance(site["fn"], dist.Unit):
                continue  # numpyro.factor: a log-density term, no data to read
            for f in site["cond_indep_stack"]:
                if f.name == frame.name:
                    observed.append(_ObservedSlot(name, f.dim - site["fn"].event_dim))
        observed = tuple(observed)
        features = self._row_features(
            frame.name, observed, self.prototype_trace, rows, None, args, kwargs
        )
        if features is None:
            raise ValueError(_no_observations_message(type(self).__name__, frame.name))
        mean = jnp.mean(features, 0)
        sd = jnp.std(features, 0)
        self._feature_stats[frame.name] = (
            np.asarray(mean),
            np.asarray(jnp.where(sd > FEATURE_SD_FLOOR, sd, 1.0)),
        )
        return _LocalPart(frame.name, frame.dim, tuple(slots), observed, offset, features.shape[-1])

    def _input_fn(self, plate):
        if self.local_inputs is None:
            return None
        if isinstance(self.local_inputs, Mapping):
            return self.local_inputs.get(plate)
        return self.local_inputs

    def _check_local_inputs(self):
        if isinstance(self.local_inputs, Mapping):
            unknown = sorted(set(self.local_inputs) - set(self._locals))
            if unknown:
                raise ValueError(
                    f"local_inputs names {unknown}, which are not subsampled plates with local "
                    f"latents; those are {sorted(self._locals)}."
                )
        elif self.local_inputs is not None and len(self._locals) > 1:
            raise ValueError(
                f"The model has {len(self._locals)} subsampled plates with local latents "
                f"({sorted(self._locals)}); pass local_inputs as {{plate name: fn}}."
            )

    def _row_features(self, plate, observed, trace, rows, idx, args, kwargs):
        """``(rows, F)``: the row's observed values, then ``local_inputs``; ``None`` if
        there are none."""
        pieces = []
        for slot in observed:
            if not trace[slot.name]["is_observed"]:
                raise ValueError(
                    f"AutoHybridFlow draws a row's locals from the row's data, but the site "
                    f"'{slot.name}' of plate '{plate}' is not observed in this call (obs=None?). "
                    "Pass the data the guide was fitted with; for new rows, pass their data."
                )
            value = jnp.asarray(trace[slot.name]["value"])
            value = jnp.moveaxis(value, slot.axis, 0) if value.ndim else value[None]
            value = jnp.broadcast_to(value, (rows, *value.shape[1:]))
            pieces.append(value.reshape(rows, -1))
        fn = self._input_fn(plate)
        if fn is not None:
            if idx is None:
                idx = trace[plate]["value"]
            extra = jnp.asarray(fn(idx, *args, **kwargs))
            extra = extra.reshape(rows, -1) if extra.ndim != 1 else extra[:, None]
            pieces.append(extra)
        if not pieces:
            return None
        dtype = jnp.result_type(float)
        return jnp.concatenate([p.astype(dtype) for p in pieces], -1)

    def _create_plates(self, *args, **kwargs):
        if self.create_plates is not None and not self._row_numbers:
            return super()._create_plates(*args, **kwargs)
        # The model's own plates, sized by the data of this call (a trained guide applies
        # to new rows and to data of another size); given rows (sample_posterior, the
        # full-data diagnostics) take their plate's place. Each plate is made once: a
        # plate made twice would record its second draw in the trace.
        sizes = self._model_plates(args, kwargs)
        plates = {}
        for name, frame in sorted(self._prototype_frames.items()):
            size, subsample_size = sizes.get(
                name, (self._prototype_frame_full_sizes[name], frame.size)
            )
            rows = self._row_numbers.get(name)
            if rows is None:
                plates[name] = numpyro.plate(
                    name, size, dim=frame.dim, subsample_size=subsample_size
                )
                continue
            with handlers.substitute(data={name: rows}):
                plates[name] = numpyro.plate(name, size, dim=frame.dim, subsample_size=len(rows))
        return plates

    def _model_plates(self, args, kwargs) -> dict:
        """``{plate: (size, subsample_size)}`` of the model's plates for these arguments,
        from one run that draws no subsample (only shapes are read; XLA drops the rest)."""
        model = handlers.substitute(handlers.seed(self.model, 0), substitute_fn=_no_draws)
        with handlers.block(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            trace = handlers.trace(model).get_trace(*args, **kwargs)
        return {
            name: tuple(site["args"]) for name, site in trace.items() if site["type"] == "plate"
        }

    @contextmanager
    def given_rows(self, rows):
        """Within this context the guide draws the locals of ``rows`` (an int array for
        the one subsampled plate, or ``{plate: rows}``) instead of a random subsample."""
        saved = self._row_numbers
        self._row_numbers = self.rows_map(rows)
        try:
            yield
        finally:
            self._row_numbers = saved

    # ------------------------------------------------------------------ sizes
    @property
    def global_dim(self) -> int:
        """Number of unconstrained global latent values."""
        return sum(slot.size for slot in self._globals)

    def _encoder_widths(self, part: _LocalPart) -> tuple[int, ...]:
        if self.encoder is not None:
            return self.encoder
        inputs = part.feature_dim + self.global_dim
        width = min(max(2 * inputs, 32), 256)
        return (width, width)

    # ------------------------------------------------------------------ params
    def _dtype(self):
        leaves = [v for v in self._init_locs.values()]
        return jnp.result_type(*leaves) if leaves else jnp.zeros(()).dtype

    def _global_params(self):
        dtype = self._dtype()
        dim = self.global_dim
        flow = packed_param(
            f"{self.prefix}_global_flow",
            lambda key: self.global_flow.init(key, dim, dtype=dtype),
            param_layouts(self),
        )
        loc = numpyro.param(f"{self.prefix}_global_loc", self._global_init)
        scale = numpyro.param(
            f"{self.prefix}_global_scale",
            jnp.full((dim,), self._init_scale, dtype),
            constraint=constraints.softplus_positive,
        )
        return flow, loc, scale

    def _local_params(self, part: _LocalPart):
        dtype = self._dtype()
        widths = self._encoder_widths(part)
        inputs = part.feature_dim + self.global_dim
        init_loc = self._local_init[part.plate].astype(dtype)
        init_scale = self._init_scale

        def init_encoder(key):
            trunk_key, head_key = jax.random.split(key)
            dims = (inputs, *widths)
            trunk = dense_stack_init(
                trunk_key, list(zip(dims[:-1], dims[1:])), zero_last=False, dtype=dtype
            )
            head = dense_init(head_key, widths[-1], 2 * part.latent_dim, zero=True, dtype=dtype)
            # The head starts at the constant (init_loc, init_scale): softplus^-1 offset.
            raw_scale = jnp.log(jnp.expm1(jnp.asarray(init_scale, dtype)))
            head["b"] = jnp.concatenate([init_loc, jnp.full((part.latent_dim,), raw_scale, dtype)])
            # Slopes of (loc, raw scale) in each standardised global, per row: zero at first.
            slopes = dense_init(
                head_key, widths[-1], 2 * part.latent_dim * self.global_dim, zero=True, dtype=dtype
            )
            return {"trunk": trunk, "head": head, "slopes": slopes}

        encoder = packed_param(
            f"{self.prefix}_{part.plate}_encoder", init_encoder, param_layouts(self)
        )
        flow = packed_param(
            f"{self.prefix}_{part.plate}_flow",
            lambda key: self.local_flow.init(key, part.latent_dim, widths[-1], dtype=dtype),
            param_layouts(self),
        )
        return encoder, flow

    # ------------------------------------------------------------------ the guide
    def __call__(self, *args, **kwargs):
        if not self._is_set_up:
            self._setup_prototype(*args, **kwargs)
        result = {}
        global_value = None
        if self._globals:
            global_value = self._sample_globals(result)
        if self._locals and not self._globals_only:
            self._require_model()
            plates = self._create_plates(*args, **kwargs)
            observed = self._observed_trace(plates, result, args, kwargs)
            for part in self._locals.values():
                self._sample_locals(part, plates, observed, global_value, result, args, kwargs)
        return result

    def _sample_globals(self, result):
        flow_params, loc, scale = self._global_params()
        base = dist.Normal(jnp.zeros(self.global_dim, self._dtype()), 1.0).to_event(1)
        transforms = [
            self.global_flow.transform(flow_params),
            IndependentTransform(AffineTransform(loc, scale), 1),
        ]
        latent = numpyro.sample(
            f"_{self.prefix}_global_latent",
            dist.TransformedDistribution(base, transforms),
            infer={"is_auxiliary": True},
        )
        for slot in self._globals:
            unconstrained = latent[..., slot.offset : slot.offset + slot.size].reshape(
                latent.shape[:-1] + slot.shape
            )
            result[slot.name] = self._delta_site(slot.name, unconstrained)
        # The locals are conditioned on the standardised globals, (g - loc) / scale.
        return (latent - loc) / scale

    def _delta_site(self, name, unconstrained):
        transform = biject_to(self._supports[name])
        value = transform(unconstrained)
        event_dim = self._event_dims[name]
        if numpyro.get_mask() is False:
            log_density = 0.0
        else:
            log_density = -transform.log_abs_det_jacobian(unconstrained, value)
            log_density = sum_rightmost(
                log_density, jnp.ndim(log_density) - jnp.ndim(value) + event_dim
            )
        return numpyro.sample(name, dist.Delta(value, log_density=log_density, event_dim=event_dim))

    def _require_model(self):
        if self.model is None:
            raise ValueError(
                "This guide was loaded without its model: it draws the globals "
                "(sample_posterior without rows=), but a row's locals depend on the row's "
                "data, which the model reads. Attach it: load_guide(path, model=model)."
            )

    def _observed_trace(self, plates, result, args, kwargs):
        """One run of the model on the current rows (the guide's plate indices), the
        globals at their sampled values, to read the rows' observed values (the other
        latents at init values: only observed data is read, and XLA drops the rest)."""
        indices = {name: plates[name]._indices for name in self._locals}
        # The seed innermost: init_to_uniform draws with the key it puts on each site.
        model = handlers.seed(self.model, 0)
        model = handlers.substitute(model, substitute_fn=_no_draws)
        model = handlers.substitute(model, data={**indices, **result})
        with handlers.block(), warnings.catch_warnings():
            # Given rows (given_rows) differ in number from the model's subsample_size.
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            return handlers.trace(model).get_trace(*args, **kwargs)

    def _sample_locals(self, part, plates, observed, global_value, result, args, kwargs):
        plate = plates[part.plate]
        rows = plate.subsample_size
        idx = plate._indices
        features = self._row_features(part.plate, part.observed, observed, rows, idx, args, kwargs)
        encoder, flow_params = self._local_params(part)
        # Standardised as the set-up rows were (a fixed part of the guide, not a param).
        mean, sd = (jnp.asarray(a, features.dtype) for a in self._feature_stats[part.plate])
        inputs = conditioner_input((features - mean) / sd)
        if global_value is not None:
            # The globals standardised by the guide's own affine layer: where the posterior
            # of the globals is narrow (many rows), their raw values barely move, and an
            # encoder fed those could not follow them.
            inputs = jnp.concatenate(
                [
                    inputs,
                    jnp.broadcast_to(conditioner_input(global_value), (rows, self.global_dim)),
                ],
                -1,
            )
        act = get_activation(self.nonlinearity)
        h = inputs.astype(self._dtype())
        for layer in encoder["trunk"]:
            h = act(h @ layer["w"] + layer["b"])
        head = h @ encoder["head"]["w"] + encoder["head"]["b"]
        if global_value is not None:
            # First order in the globals, with per-row slopes: a row's conditional mean
            # and scale move with the globals as its data says (in a hierarchy the
            # shrinkage of a group's effect is its data times a function of the spread),
            # a product an MLP of the concatenation only approximates.
            slopes = (h @ encoder["slopes"]["w"] + encoder["slopes"]["b"]).reshape(
                rows, 2 * part.latent_dim, self.global_dim
            )
            head = head + slopes @ global_value
        loc = head[..., : part.latent_dim]
        scale = jax.nn.softplus(head[..., part.latent_dim :])

        # Rows on the plate's dim: (rows, 1, ..., 1, latent_dim).
        row_shape = (rows,) + (1,) * (-part.dim - 1)
        loc, scale, h = (a.reshape(row_shape + a.shape[-1:]) for a in (loc, scale, h))
        base = dist.Normal(jnp.zeros_like(loc), 1.0).to_event(1)
        transforms = [
            self.local_flow.transform(flow_params, h),
            IndependentTransform(AffineTransform(loc, scale), 1),
        ]
        with plate:
            latent = numpyro.sample(
                f"_{self.prefix}_{part.plate}_latent",
                dist.TransformedDistribution(base, transforms),
                infer={"is_auxiliary": True},
            )
        latent = latent.reshape((rows, part.latent_dim))
        for slot in part.sites:
            piece = latent[:, slot.offset : slot.offset + slot.size].reshape((rows, *slot.shape))
            unconstrained = jnp.moveaxis(piece, 0, slot.axis)
            with ExitStack() as stack:
                for name in self._site_frames[slot.name]:
                    stack.enter_context(plates[name])
                result[slot.name] = self._delta_site(slot.name, unconstrained)

    # ------------------------------------------------------------------ without SVI
    def sample_posterior(self, rng_key, params, *args, sample_shape=(), rows=None, **kwargs):
        """Draws from the guide: every global latent site and, for the rows asked for,
        the local ones.

        Args:
            rng_key: a JAX PRNG key.
            params: the fitted parameters (``svi.get_params(state)``).
            *args, **kwargs: the model's arguments, as given to SVI.
            sample_shape: leading shape of the draws.
            rows: row numbers of the subsampled plate (an int array), or ``{plate: rows}``
                with several; ``None``: the globals only.

        Returns:
            ``{site: array (*sample_shape, *site_shape)}``; a local site's row axis has
            ``len(rows)`` entries, in the order given.
        """
        ensure_setup(self, args, kwargs)

        def one(key):
            return handlers.substitute(handlers.seed(self, key), data=params)(*args, **kwargs)

        num = int(np.prod(sample_shape))
        keys = jax.random.split(rng_key, max(num, 1))
        with self.given_rows(rows), self._only_globals(rows is None):
            draws = jax.lax.map(one, keys) if sample_shape else one(rng_key)
        if not sample_shape:
            return draws
        return jax.tree.map(lambda x: x.reshape(tuple(sample_shape) + x.shape[1:]), draws)

    @contextmanager
    def _only_globals(self, flag: bool):
        saved, self._globals_only = self._globals_only, flag
        try:
            yield
        finally:
            self._globals_only = saved

    def all_rows(self, *args, **kwargs) -> dict:
        """``{plate: every row number}`` of each subsampled plate with local latents, for
        the model's arguments (the data)."""
        self._require_model()
        sizes = self._model_plates(args, kwargs)
        return {name: jnp.arange(sizes[name][0], dtype=jnp.int32) for name in self._locals}

    def importance_draws(
        self,
        rng_key,
        params,
        *args,
        num_samples: int = 1000,
        rows=None,
        keep_draws: bool = True,
        **kwargs,
    ) -> tuple[dict, jax.Array, jax.Array]:
        """Guide draws on the full data with ``log p(x, z)`` and ``log q(z)``.

        Every row of every subsampled plate is drawn, so ``log_p - log_q`` are the log
        importance ratios of the whole posterior (PSIS, Yao et al. 2018,
        https://arxiv.org/abs/1802.02538), computed one batch of draws at a time; the data
        must fit in memory once per draw.

        Args:
            rng_key: a JAX PRNG key.
            params: the fitted parameters (the model's own param sites among them).
            *args, **kwargs: the model's arguments, as given to SVI (the full data, when
                the model picks its minibatch rows itself).
            num_samples: number of draws ``S``.
            rows: the rows whose local values to return (as in :meth:`sample_posterior`);
                ``None``: every row.
            keep_draws: ``False`` returns no draws (``{}``), only the two log densities.

        Returns:
            ``(draws, log_p, log_q)``: ``{site: (S, ...)}`` of the constrained latent
            sites (globals, and the locals of ``rows``), and two arrays ``(S,)`` in the
            constrained space (their difference is the same as in the unconstrained one).
        """
        ensure_setup(self, args, kwargs)
        full = self.all_rows(*args, **kwargs)
        keep = None if rows is None else self.rows_map(rows)

        def one(key):
            guide_key, model_key = jax.random.split(key)
            log_q, guide_trace = log_density(handlers.seed(self, guide_key), args, kwargs, params)
            model = handlers.replay(handlers.seed(self.model, model_key), guide_trace)
            log_p, _ = log_density(model, args, kwargs, params)
            values = self._kept_values(guide_trace, keep) if keep_draws else {}
            return values, log_p, log_q

        keys = jax.random.split(rng_key, num_samples)
        rows_total = sum(int(r.shape[0]) for r in full.values()) or 1
        batch_size = max(1, min(num_samples, DRAW_BATCH_VALUES // rows_total))
        with self.given_rows(full), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            return jax.jit(lambda keys: jax.lax.map(one, keys, batch_size=batch_size))(keys)

    def _kept_values(self, guide_trace, keep) -> dict:
        values = {}
        for name in self._init_locs:
            value = guide_trace[name]["value"]
            part = self._part_of(name)
            if part is not None and keep is not None:
                axis = part.dim - self._event_dims[name]
                value = jnp.take(value, keep[part.plate], axis=axis)
            values[name] = value
        return values

    def _part_of(self, name) -> _LocalPart | None:
        for part in self._locals.values():
            if any(slot.name == name for slot in part.sites):
                return part
        return None

    def rows_map(self, rows) -> dict:
        """``rows`` (an int array for the one subsampled plate, or ``{plate: rows}``) as
        ``{plate: int32 array}``; ``{}`` for ``None``."""
        if rows is None:
            return {}
        if self._is_set_up and not self._locals:
            raise ValueError("This model has no local latents; call without rows=.")
        if not isinstance(rows, Mapping):
            if len(self._locals) > 1:
                raise ValueError(
                    f"The model has {len(self._locals)} subsampled plates "
                    f"({sorted(self._locals)}); pass rows={{plate name: row numbers}}."
                )
            plate = next(iter(self._locals)) if self._locals else None
            rows = {plate: rows}
        return {name: jnp.asarray(value, jnp.int32) for name, value in rows.items()}

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        # Closures over the model and its data cannot be pickled, and the prototype run
        # holds the data; the guide keeps what drawing needs (site slots, supports, plates).
        for name in ("_potential_fn", "_potential_fn_gen", "_postprocess_fn", "prototype_trace"):
            state[name] = None
        state["model"] = picklable_or_none(state.get("model"))
        state["local_inputs"] = picklable_or_none(state.get("local_inputs"))
        return state

    def flow_params(self, params: dict) -> dict:
        """The networks' parameters from the guide's ``params``, as pytrees:
        ``{"global": global flow, plate: {"encoder": ..., "flow": local flow}}``. Their param
        sites hold each as one vector, which keeps the SVI state small
        (:mod:`numpyro_flows._param_packing`); the guide must have run (``svi.init``)."""
        if not self._is_set_up:
            raise RuntimeError(
                "This guide has not been set up yet: run svi.init (or the guide once) first."
            )
        with numpyro.handlers.substitute(data=params):
            out = {"global": self._global_params()[0]}
            for plate, part in self._locals.items():
                encoder, flow = self._local_params(part)
                out[plate] = {"encoder": encoder, "flow": flow}
        return out

    def num_params(self, params) -> int:
        """Number of parameter values of this guide (it does not grow with the data)."""
        prefix = f"{self.prefix}_"
        return sum(
            int(np.size(leaf))
            for name, value in params.items()
            if name.startswith(prefix)
            for leaf in jax.tree.leaves(value)
        )


# ---------------------------------------------------------------------- helpers
def _no_draws(site):
    """A substitute_fn for runs that only read shapes and data: subsampled plates take
    their first rows (no permutation of the full size is drawn), latents init values."""
    if site["type"] == "plate":
        size, subsample_size = site["args"]
        return jnp.arange(size if subsample_size is None else subsample_size)
    return init_to_uniform(site)


def subsampled_local_sites(model, args: tuple, kwargs: dict) -> list[str]:
    """The latent sites of ``model`` that sit in a subsampled plate (one seeded run; an
    empty list where the model cannot be run this way)."""
    # The seed innermost: init_to_uniform draws with the key it puts on each site.
    seeded = handlers.substitute(handlers.seed(model, 0), substitute_fn=_no_draws)
    try:
        with handlers.block(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trace = handlers.trace(seeded).get_trace(*args, **kwargs)
    except Exception:  # noqa: BLE001 - left to the guide's own set-up to report
        return []
    full = {name: site["args"][0] for name, site in trace.items() if site["type"] == "plate"}
    return [
        name
        for name, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and any(f.size != full.get(f.name, f.size) for f in site["cond_indep_stack"])
    ]


# ---------------------------------------------------------------------- messages
def _nested_message(name, frames) -> str:
    names = ", ".join(f"'{f.name}'" for f in frames)
    return (
        f"AutoHybridFlow cannot guide the site '{name}': it sits in several subsampled plates "
        f"({names}). Subsample only the outer plate (the inner one then holds every row of "
        "each outer row, as event dimensions of the local latents), or guide this model with "
        "numpyro.infer.autoguide.AutoNormal, which keeps one parameter per local value."
    )


def _no_observations_message(owner, plate) -> str:
    return (
        f"{owner} conditions each row's local latents on that row's data, but the subsampled "
        f"plate '{plate}' holds no observed site. Pass the rows' inputs with "
        f"local_inputs={{'{plate}': fn}}, fn(idx, *args, **kwargs) -> (len(idx), F), or put "
        "the plate's observations inside it."
    )


__all__ = ["DRAW_BATCH_VALUES", "FEATURE_SD_FLOOR", "AutoHybridFlow", "subsampled_local_sites"]
