r"""Training speed of darnax, the authors' JAX library, on recipe A: the bar for speed.py.

darnax (github Willinki/darnax, GPL-3.0) is *imported* from a source checkout given on the
command line; no line of it is included here. The script builds the model of its tutorial 09
("sparsity, learning rate maps and weight decay": the recipe darnn ships as
configs/recipe_a_sparse_mnist.yaml) with that tutorial's settings, and times its
``DynamicalTrainer.train_step`` followed by the tutorial's per-step weight decay, at batch
16, on Fashion-MNIST pixels in [0, 1] — the inputs ``benchmarks/speed.py`` feeds recipe A when
MNIST is not installed. Run it beside ``speed.py --configs A`` on the same machine:

    git -C <bare mirror of darnax> archive d42e00ef | tar -x -C /tmp/darnax
    python3 -m venv /tmp/jaxvenv
    /tmp/jaxvenv/bin/pip install "jax[cpu]==0.4.38" "jaxlib==0.4.38" \
        "equinox>=0.11.12,<0.13" "optax>=0.2.3,<0.3" numpy
    /tmp/jaxvenv/bin/python benchmarks/darnax_speed.py --darnax /tmp/darnax/src

It prints one JSON object: training samples/s (best of --repeats timed runs of --steps
steps after a warm-up that includes JIT compilation) of the tutorial's loop (the jitted step,
then its weight decay, run eagerly) and of the jitted step alone, the jax version and the
device.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 16
N, D, C = 2000, 784, 10
FASHION = Path("/usr/share/datasets/fashion-mnist")
# Tutorial 09's settings (darnn: configs/recipe_a_sparse_mnist.yaml explains each number).
MODEL = {"sparsity": 0.99, "sparsity_win": 0.9, "strength_forth": 5.0, "strength_back": 1.3,
         "j_d": 0.95, "threshold_in": 1.78, "threshold_out": 7.0, "threshold_j": 1.78}  # fmt: skip
RATES = {"w_in": 0.159, "j": 0.058, "w_out": 0.17}
DECAYS = {"w_in": 0.01, "j": 0.00006, "w_out": 0.02}
SWEEPS = {"warmup_n_iter": 1, "train_clamped_n_iter": 5, "train_free_n_iter": 5,
          "eval_n_iter": 5}  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or not) as an array: images (n, rows*cols) or labels (n,)."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    return data.reshape(shape[0], -1) if dims > 1 else data.reshape(shape[0])


def batches(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n training images as float32 pixels in [0, 1] and ±1 one-hot labels."""
    x = read_idx(folder / "train-images-idx3-ubyte.gz")[:n].astype(np.float32) / 255.0
    y = read_idx(folder / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return x, np.where(np.eye(C, dtype=np.float32)[y] > 0, 1.0, -1.0).astype(np.float32)


def build(darnax_src: str):  # type: ignore[no-untyped-def]
    """Tutorial 09's trainer, and its per-step decay as a function of the orchestrator."""
    sys.path.insert(0, darnax_src)
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.tree_util as jtu
    import optax
    from darnax.layer_maps.sparse import LayerMap
    from darnax.modules.fully_connected import (
        FrozenRescaledFullyConnected,
        FullyConnected,
        SparseFullyConnected,
    )
    from darnax.modules.input_output import OutputLayer
    from darnax.modules.recurrent import SparseRecurrentDiscrete
    from darnax.orchestrators.sequential import SequentialOrchestrator
    from darnax.states.sequential import SequentialState
    from darnax.trainers.dynamical import DynamicalTrainer

    m = MODEL
    k = jax.random.split(jax.random.key(44), 5)
    hidden = {
        0: SparseFullyConnected(in_features=D, out_features=N, strength=m["strength_forth"],
                                threshold=m["threshold_in"], sparsity=m["sparsity_win"],
                                key=k[0]),
        1: SparseRecurrentDiscrete(features=N, j_d=m["j_d"], sparsity=m["sparsity"],
                                   threshold=m["threshold_j"], key=k[1]),
        2: FrozenRescaledFullyConnected(in_features=C, out_features=N,
                                        strength=m["strength_back"], threshold=0.0, key=k[2]),
    }  # fmt: skip
    out = {1: FullyConnected(in_features=N, out_features=C, strength=1.0,
                             threshold=m["threshold_out"], key=k[3]), 2: OutputLayer()}  # fmt: skip
    orchestrator = SequentialOrchestrator(layers=LayerMap.from_dict({1: hidden, 2: out}))

    # One SGD rate per matrix (W_in, J: divided by sqrt of their density), none elsewhere.
    params = eqx.filter(orchestrator, eqx.is_inexact_array)
    labels = jtu.tree_map(lambda _: "rest", params)
    for (i, j), name in {(1, 0): "w_in", (1, 1): "j", (2, 1): "w_out"}.items():
        named = jtu.tree_map(lambda _, n=name: n, params.lmap[i][j])
        labels = eqx.tree_at(lambda t, i=i, j=j: t.lmap[i][j], labels, replace=named)
    rate = {"w_in": RATES["w_in"] / np.sqrt(1 - m["sparsity_win"]),
            "j": RATES["j"] / np.sqrt(1 - m["sparsity"]), "w_out": RATES["w_out"]}  # fmt: skip
    optimizer = optax.multi_transform(
        {"rest": optax.sgd(0.0), **{n: optax.sgd(r) for n, r in rate.items()}}, labels
    )
    trainer = DynamicalTrainer(
        orchestrator=orchestrator, state=SequentialState((D, N, C)), optimizer=optimizer,
        optimizer_state=optimizer.init(params), **SWEEPS,
    )  # fmt: skip

    # The tutorial's decay after every step: W <- W (1 - d), d = coefficient * rate ...
    d_in = (
        DECAYS["w_in"] / np.sqrt(1 - m["sparsity_win"]) * np.sqrt(0.1) * RATES["w_in"] / np.sqrt(D)
    )
    d_j = DECAYS["j"] * RATES["j"] / np.sqrt(1 - m["sparsity"]) * np.sqrt(0.1) / np.sqrt(N)
    d_out = DECAYS["w_out"] * RATES["w_out"] / np.sqrt(N)

    def decay(o):  # type: ignore[no-untyped-def]
        o = eqx.tree_at(lambda t: t.lmap[1][0].W, o, o.lmap[1][0].W * (1.0 - d_in))
        mask = jnp.asarray(o.lmap[1][1]._mask)
        o = eqx.tree_at(lambda t: t.lmap[1][1].J, o, o.lmap[1][1].J * (1.0 - d_j * mask))
        return eqx.tree_at(lambda t: t.lmap[2][1].W, o, o.lmap[2][1].W * (1.0 - d_out))

    return trainer, decay, jax


def main() -> None:
    """Parse the command line, time darnax's training steps, print the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--darnax", required=True, help="the src folder of a darnax checkout")
    ap.add_argument("--data", type=Path, default=FASHION, help="folder of Fashion-MNIST IDX files")
    ap.add_argument("--steps", type=int, default=100, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first (JIT included)")
    args = ap.parse_args()
    n = BATCH * (args.warmup + args.steps * args.repeats)
    x, y = batches(args.data, n)
    trainer, decay, jax = build(args.darnax)
    key = jax.random.key(0)
    xs = [jax.numpy.asarray(x[i : i + BATCH]) for i in range(0, n, BATCH)]
    ys = [jax.numpy.asarray(y[i : i + BATCH]) for i in range(0, n, BATCH)]

    def run(first: int, count: int, with_decay: bool) -> None:
        nonlocal key
        for i in range(first, first + count):
            key = trainer.train_step(xs[i], ys[i], key)
            if with_decay:
                trainer.orchestrator = decay(trainer.orchestrator)
        jax.block_until_ready(jax.tree_util.tree_leaves(trainer.orchestrator))

    t0 = time.perf_counter()
    run(0, args.warmup, True)
    warm_s = time.perf_counter() - t0
    # The tutorial's loop (step, then its eager decay), and the jitted step alone.
    best = {True: float("inf"), False: float("inf")}
    for r in range(args.repeats):
        for with_decay in best:
            t0 = time.perf_counter()
            run(args.warmup + r * args.steps, args.steps, with_decay)
            best[with_decay] = min(best[with_decay], time.perf_counter() - t0)
    print(json.dumps({
        "darnax": "tutorial 09 (sparse MNIST: N=2000, J 99% / W_in 90% sparse, 1+5+5 sweeps)",
        "inputs": f"fashion-mnist pixels in [0, 1] from {args.data}",
        "train": {"batch": BATCH, "samples_per_s": BATCH * args.steps / best[True],
                  "step_ms": 1e3 * best[True] / args.steps, "warmup_s": warm_s,
                  "samples_per_s_without_decay": BATCH * args.steps / best[False]},
        "jax": jax.__version__, "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
