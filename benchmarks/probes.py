r"""Variants of the training loop that are not config options, for docs/recipes.md.

The second round's: input centring, W_in rows held at their initial norm, linear rate
schedules.

Each run trains with the library's own `fit_epoch` (the variant enters through its public
``step`` argument, or as a transform of the input arrays) and prints validation accuracy
and diagnostics after every epoch; the test split is never read. Example:

    python benchmarks/probes.py centred --config configs/default.yaml --center \
        network.hidden=[2000] data.limit_train=20000 train.epochs=3
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import Tensor

from darnn.config import LearningConfig
from darnn.couplings import Coupling, DenseCoupling, SparseCoupling
from darnn.data import load_data
from darnn.epoch import fit_epoch, seeded_generators
from darnn.learning import StepStats, evaluate, learning_step
from darnn.network import Network
from darnn.runconfig import load_run_config


def row_norms(c: Coupling) -> Tensor:
    """Euclidean norm of every row of a dense or CSR coupling."""
    if isinstance(c, DenseCoupling):
        return c.weight.detach().norm(dim=1)
    assert isinstance(c, SparseCoupling)
    rows = torch.repeat_interleave(torch.arange(c.n_out), c.crow.long().diff())
    return torch.zeros(c.n_out).index_add_(0, rows, c.values.detach() ** 2).sqrt()


@torch.no_grad()
def set_row_norms(c: Coupling, target: Tensor) -> None:
    """Rescale every row of ``c`` to the norm ``target`` (one per row), in place."""
    scale = target / row_norms(c).clamp_min(1e-12)
    if isinstance(c, DenseCoupling):
        c.weight.mul_(scale.unsqueeze(1))
    else:
        assert isinstance(c, SparseCoupling)
        c.values.mul_(torch.repeat_interleave(scale, c.crow.long().diff()))


def main() -> None:
    """Parse the command line, train the variant, print per-epoch validation lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="label printed on every line")
    ap.add_argument("--config", required=True)
    ap.add_argument("--center", action="store_true", help="subtract the training mean feature")
    ap.add_argument("--renorm", action="store_true", help="hold W_in rows at their initial norm")
    ap.add_argument(
        "--rates-final",
        type=float,
        metavar="F",
        help="scale lr_in, lr_j, lr_out linearly from 1 (first epoch) to F (last epoch)",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides, as for darnn train")
    args = ap.parse_intermixed_args()

    torch.set_num_threads(1)
    cfg = load_run_config(args.config, args.overrides)
    data = load_data(cfg.data)
    X, y = torch.from_numpy(data.X_train).float(), torch.from_numpy(data.y_train)
    X_val, y_val = torch.from_numpy(data.X_val).float(), torch.from_numpy(data.y_val)
    if args.center:
        mean = X.mean(0)
        X, X_val = X - mean, X_val - mean
    net = Network(cfg.network, data.n_features, data.n_classes, seed=cfg.train.seed)
    order_gen, dynamics_gen = seeded_generators(cfg.train.seed)
    w_in = net.w_in[0]
    initial = row_norms(w_in)

    def step(
        net: Network,
        x: Tensor,
        y: Tensor,
        lc: LearningConfig,
        generator: torch.Generator | None = None,
    ) -> StepStats:
        stats = learning_step(net, x, y, lc, generator=generator)
        if args.renorm:
            set_row_norms(w_in, initial)
        return stats

    base, epochs, curve = cfg.learning, cfg.train.epochs, []
    for epoch in range(epochs):
        lc = base
        if args.rates_final is not None:
            f = 1 - epoch / max(epochs - 1, 1) * (1 - args.rates_final)
            lc = dataclasses.replace(
                base, lr_in=base.lr_in * f, lr_j=base.lr_j * f, lr_out=base.lr_out * f
            )
        tick = time.perf_counter()
        perm = torch.randperm(len(y), generator=order_gen)
        counters, _ = fit_epoch(
            net, X, y, lc, cfg.train.batch_size, perm, generator=dynamics_gen, step=step
        )
        result = evaluate(net, X_val, y_val, lc)
        h_in = net.input_drives(X_val[:500])[0].std().item()
        curve.append(float(result["accuracy"]))
        print(
            f"{args.name} epoch {epoch + 1} val {curve[-1]:.4f} "
            f"train {counters.fraction('correct'):.4f} unstable {counters.fraction('unstable'):.4f}"
            f" eval_sweeps {float(result['sweeps']):.2f} input_field_std {h_in:.2f} "
            f"w_in_row_norm {row_norms(w_in).mean():.2f} ({time.perf_counter() - tick:.0f} s)",
            flush=True,
        )
    print(f"RESULT {args.name} " + " ".join(f"{v:.4f}" for v in curve), flush=True)


if __name__ == "__main__":
    main()
