"""normflows (PyTorch) reference flows on scikit-learn's digits: multiscale Glow, multiscale
RealNVP and MAF, trained by maximum likelihood, scored in test bits/dim.

The protocol of ``/work/shared/anchors/images-digits.md`` (data, noise and the bits/dim
formula come from ``benchmarks.digits``). torch runs on one thread. Benchmark-only: needs
the torch CPU build and normflows 1.7.3 (see ``benchmarks/requirements.txt``).

    python -m benchmarks.images_torch [--models glow realnvp maf] [--seeds 0 1] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import normflows as nf
import numpy as np
import torch

from benchmarks import digits

RESULTS = Path(__file__).parent / "results"
MODELS = ("glow", "realnvp", "realnvp_channel", "maf")
LOGIT_ALPHA = 0.05  # normflows' Logit: y = logit(α + (1 − 2α) x)
LEVELS, STEPS, HIDDEN = 2, 4, 64  # multiscale levels, steps per level, hidden channels
INPUT_SHAPE = (1, 8, 8)  # NCHW
NUM_DIMS = int(np.prod(INPUT_SHAPE))
NUM_SAMPLES = 64


def _latent_shape(level: int) -> tuple[int, int, int]:
    """Latent shape of a level, as in normflows' Glow example: 8×2×2, then 2×4×4."""
    c, h, w = INPUT_SHAPE
    if level == 0:
        return c * 2 ** (LEVELS + 1), h // 2**LEVELS, w // 2**LEVELS
    return c * 2 ** (LEVELS - level), h // 2 ** (LEVELS - level), w // 2 ** (LEVELS - level)


def _realnvp_step(channels: int, step: int, mask: str) -> list[nf.flows.Flow]:
    """One RealNVP step: affine coupling + ActNorm, no invertible 1×1 conv.

    normflows' ``GlowBlock`` always appends an ``Invertible1x1Conv`` (``use_lu`` only
    changes its parametrisation), so the step is built from the blocks GlowBlock uses:
    ``AffineCouplingBlock`` (Split, AffineCoupling, Merge) with a ``ConvNet2d`` of the same
    shape as GlowBlock's (3×3, 1×1, 3×3 kernels, zero-initialised last layer), RealNVP's
    exp scale, masks alternating ``checkerboard`` / ``checkerboard_inv`` (or ``channel`` /
    ``channel_inv`` for ``mask="channel"``, the paper's masks after a squeeze), followed by
    ``ActNorm`` in place of RealNVP's batch norm. normflows' checkerboard alternates over
    channels as well as pixels, and the conditioner sees the kept half packed to width W/2.
    """
    if mask == "checkerboard":  # all channels in (packed), scale and shift for all out
        sizes = (channels, HIDDEN, HIDDEN, 2 * channels)
    else:  # half of the channels condition the other half
        sizes = (channels // 2, HIDDEN, HIDDEN, 2 * (channels - channels // 2))
    param_map = nf.nets.ConvNet2d(sizes, (3, 1, 3))
    mode = mask if step % 2 == 0 else f"{mask}_inv"
    coupling = nf.flows.AffineCouplingBlock(param_map, scale=True, scale_map="exp", split_mode=mode)
    return [coupling, nf.flows.ActNorm((channels, 1, 1))]


def build_multiscale(model: str) -> nf.MultiscaleFlow:
    """Glow or RealNVP in normflows' multiscale layout (its Glow example, unconditional).

    Per level: ``STEPS`` steps at ``channels`` = 8, then 4 channels, a ``Squeeze`` and, below
    the top level, a channel ``Merge`` with that level's latent. Base per level: ``GlowBase``
    (a learned diagonal Gaussian, one mean and log scale per channel; unconditional when
    ``num_classes`` is None). Preprocessing: ``nf.transforms.Logit`` as the flow's
    ``transform``, whose log-det ``MultiscaleFlow.log_prob`` adds to log p(x).
    """
    q0, merges, flows = [], [], []
    for i in range(LEVELS):
        channels = INPUT_SHAPE[0] * 2 ** (LEVELS + 1 - i)
        level = []
        for j in range(STEPS):
            if model == "glow":
                # Coupling (channel split, sigmoid scale) + LU 1×1 conv + ActNorm.
                level.append(nf.flows.GlowBlock(channels, HIDDEN, split_mode="channel", scale=True))
            else:
                mask = "channel" if model == "realnvp_channel" else "checkerboard"
                level.extend(_realnvp_step(channels, j, mask))
        level.append(nf.flows.Squeeze())
        flows.append(level)
        if i > 0:
            merges.append(nf.flows.Merge())
        q0.append(nf.distributions.GlowBase(_latent_shape(i)))
    transform = nf.transforms.Logit(alpha=LOGIT_ALPHA)
    return nf.MultiscaleFlow(q0, flows, merges, transform=transform, class_cond=False)


def build_maf() -> nf.NormalizingFlow:
    """MAF on the 64 flattened pixels: 5 × (MADE with 128 hidden units + LU permutation).

    ``MaskedAffineAutoregressive.inverse`` is the sequential, D-pass direction, and
    ``log_prob`` runs flows in inverse; ``Reverse`` makes the one-pass MADE direction the
    density direction (a true MAF; unwrapped it is an IAF, ~100× slower to train). The last
    flow is the logit (its inverse runs first in ``log_prob``, so its log-det is counted).
    """
    flows = []
    for _ in range(5):
        made = nf.flows.MaskedAffineAutoregressive(NUM_DIMS, 128)
        flows += [nf.flows.Reverse(made), nf.flows.LULinearPermute(NUM_DIMS)]
    flows.append(nf.transforms.Logit(alpha=LOGIT_ALPHA))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(NUM_DIMS), flows)


def build(model: str) -> torch.nn.Module:
    if model in ("glow", "realnvp", "realnvp_channel"):
        return build_multiscale(model)
    if model == "maf":
        return build_maf()
    raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def _log_prob(flow: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log p(x) per image for x in [0, 1]^(N, 1, 8, 8)."""
    if isinstance(flow, nf.MultiscaleFlow):
        return flow.log_prob(x, None)
    return flow.log_prob(x.reshape(len(x), -1))


def _to_nchw(levels: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.moveaxis(levels, -1, 1), dtype=torch.float32)


def _test_bpd(flow, test: torch.Tensor, noise: torch.Tensor) -> float:
    """Test bits/dim: NLL averaged over the fixed noise draws and the images."""
    flow.eval()
    with torch.no_grad():
        nll = [-_log_prob(flow, (test + u) / digits.NUM_LEVELS).mean().item() for u in noise]
    flow.train()
    return digits.bits_per_dim(float(np.mean(nll)))


def run_normflows(
    model: str,
    seed: int,
    epochs: int,
    eval_epochs: tuple[int, ...],
    batch_size: int = 128,
    lr: float = 1e-3,
) -> dict:
    """Trains one normflows model on the digits; returns its figures.

    Adam, fresh dequantization noise per batch, batches reshuffled each epoch (a torch
    generator seeded by ``seed``; the last batch of an epoch is the 1500 % 128 remainder).
    The first ``log_prob`` call is a training batch, which sets ActNorm's data-dependent
    initialisation. ``test_bpd`` maps each epoch of ``eval_epochs`` to the test bits/dim
    (``digits.test_noise``'s 8 draws, eval mode, no grad); ``time_per_epoch_s`` is the
    median training epoch, evaluation excluded; ``nan_samples`` counts the samples, of 64
    drawn at the end, with any non-finite pixel.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train_levels, test_levels = digits.load_digits_split()
    train = _to_nchw(train_levels)
    test = _to_nchw(test_levels)
    noise = torch.as_tensor(np.moveaxis(digits.test_noise(test_levels), -1, 2), dtype=torch.float32)
    flow = build(model)
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    test_bpd, times = {}, []
    train_bpd_last = float("nan")
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        nll_sum = 0.0
        for idx in torch.randperm(len(train), generator=gen).split(batch_size):
            k = train[idx]
            x = (k + torch.rand(k.shape, generator=gen)) / digits.NUM_LEVELS
            loss = -_log_prob(flow, x).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            nll_sum += loss.item() * len(idx)
        times.append(time.perf_counter() - start)
        train_bpd_last = digits.bits_per_dim(nll_sum / len(train))
        if epoch in eval_epochs:
            test_bpd[epoch] = _test_bpd(flow, test, noise)

    flow.eval()
    with torch.no_grad():
        samples, _ = flow.sample(NUM_SAMPLES)
    nan_samples = int((~torch.isfinite(samples.reshape(NUM_SAMPLES, -1))).any(dim=1).sum())
    return {
        "model": model,
        "seed": seed,
        "num_params": sum(p.numel() for p in flow.parameters()),
        "epochs": epochs,
        "test_bpd": test_bpd,
        "train_bpd_last": train_bpd_last,
        "time_per_epoch_s": statistics.median(times),
        "nan_samples": nan_samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--eval-epochs", nargs="+", type=int, default=[10, 30], help="plus the last epoch"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "images_torch.json")
    args = parser.parse_args(argv)
    eval_epochs = tuple(sorted({e for e in args.eval_epochs if e <= args.epochs} | {args.epochs}))

    runs = []
    print(f"{'model':8} {'seed':>4} {'params':>7} {'s/epoch':>8} {'NaN':>4}  test bits/dim")
    for model in args.models:
        for seed in args.seeds:
            r = run_normflows(model, seed, args.epochs, eval_epochs)
            runs.append(r)
            bpd = "  ".join(f"{e}: {v:.3f}" for e, v in r["test_bpd"].items())
            print(
                f"{model:8} {seed:>4} {r['num_params']:>7} {r['time_per_epoch_s']:>8.3f} "
                f"{r['nan_samples']:>4}  {bpd}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "normflows": nf.__version__, "torch_threads": 1}
    args.out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
