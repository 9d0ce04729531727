"""Float64 contract checks, run in their own process by test_x64.py (x64 is global state).

Also checks that float32 inputs stay float32 when x64 is on and parameters are float64.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from registry import FACTORIES, IMAGE_FACTORIES, IMAGE_SHAPE  # noqa: E402

from numpyro_flows.testing import check_transform, randomize_params  # noqa: E402


def main():
    for name, factory in FACTORIES.items():
        flow = factory()
        for dim in (3,):
            params = randomize_params(flow.init(jax.random.key(0), dim), jax.random.key(1), 0.2)
            assert jax.tree.leaves(params)[0].dtype == jnp.float64
            transform = flow.transform(params)
            x64 = jnp.concatenate(
                [
                    jax.random.normal(jax.random.key(2), (4, dim)),
                    1e4 * jax.random.normal(jax.random.key(3), (2, dim)),
                ]
            )
            check_transform(transform, x64, rtol=1e-9, log_det_atol=1e-8)
            # float32 inputs stay float32 although the parameters are float64.
            check_transform(
                transform, x64.astype(jnp.float32), gradients=False, jit=False, vmap=False
            )
            print(f"{name} D={dim}: float64 and float32-under-x64 ok", flush=True)
    for name, factory in IMAGE_FACTORIES.items():
        flow = factory()
        params = randomize_params(flow.init(jax.random.key(0), IMAGE_SHAPE), jax.random.key(1), 0.2)
        z = jax.random.normal(jax.random.key(2), (3, *IMAGE_SHAPE))
        check_transform(flow.transform(params), z, rtol=1e-9, log_det_atol=1e-8)
        check_transform(
            flow.transform(params), z.astype(jnp.float32), gradients=False, jit=False, vmap=False
        )
        print(f"{name} {IMAGE_SHAPE}: float64 and float32-under-x64 ok", flush=True)
    if "glow" not in FACTORIES:
        return
    # A dense, ill-conditioned Jacobian far from the identity: in float64 the autodiff
    # reference is exact enough to pin the log-det down to 1e-8.
    flow = FACTORIES["glow"]()
    params = randomize_params(flow.init(jax.random.key(0), 50), jax.random.key(1), 0.2)
    x = 1e4 * jax.random.normal(jax.random.key(2), (3, 50))
    report = check_transform(flow.transform(params), x, rtol=1e-9, log_det_atol=1e-8)
    print(f"glow D=50 |x|=1e4 float64 log-det error {report.log_det_error:.1e}")


if __name__ == "__main__":
    main()
